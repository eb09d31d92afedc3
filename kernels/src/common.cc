// Names, shape validation and the payload header shared by every kernels/ target.
#include <cstring>
#include <string>

#include "strata_kernels/codec.h"
#include "strata_kernels/kernel_status.h"
#include "strata_kernels/kv_layout.h"

namespace strata::kernels {

std::string_view KernelCodeName(KernelCode code) {
  switch (code) {
    case KernelCode::kOk: return "OK";
    case KernelCode::kInvalidArgument: return "InvalidArgument";
    case KernelCode::kCorruption: return "Corruption";
    case KernelCode::kNotSupported: return "NotSupported";
    case KernelCode::kOutOfRange: return "OutOfRange";
    case KernelCode::kDeviceError: return "DeviceError";
    case KernelCode::kNoSpace: return "NoSpace";
  }
  return "Unknown";
}

std::string KernelStatus::ToString() const {
  if (ok()) return "OK";
  std::string s(KernelCodeName(code_));
  s += ": ";
  s += message_;
  return s;
}

std::string_view KvDtypeName(KvDtype dtype) {
  switch (dtype) {
    case KvDtype::kFloat16: return "fp16";
    case KvDtype::kBFloat16: return "bf16";
    case KvDtype::kFloat8E4M3: return "fp8_e4m3";
    case KvDtype::kFloat8E5M2: return "fp8_e5m2";
    case KvDtype::kFloat32: return "fp32";
  }
  return "unknown";
}

std::string_view PagedLayoutName(PagedLayout layout) {
  switch (layout) {
    case PagedLayout::kVllmFlashAttn: return "vllm_flash_attn";
    case PagedLayout::kFlashInfer: return "flashinfer";
    case PagedLayout::kMla: return "mla";
  }
  return "unknown";
}

std::string_view CodecName(Codec codec) {
  switch (codec) {
    case Codec::kNone: return "none";
    case Codec::kShuffleZstd: return "shuffle_zstd";
    case Codec::kShuffleLz4: return "shuffle_lz4";
    case Codec::kFp8E4M3: return "fp8_e4m3";
    case Codec::kInt8Group: return "int8_group";
    case Codec::kInt4Kivi: return "int4_kivi";
  }
  return "unknown";
}

KernelStatus ValidateBlockShape(const BlockShape& s) {
  if (s.num_layers == 0) return KernelStatus::InvalidArgument("block shape: num_layers is 0");
  if (s.planes != 1 && s.planes != 2)
    return KernelStatus::InvalidArgument("block shape: planes must be 1 or 2, not " +
                                         std::to_string(s.planes));
  if (s.block_size == 0) return KernelStatus::InvalidArgument("block shape: block_size is 0");
  if (s.num_kv_heads == 0) return KernelStatus::InvalidArgument("block shape: num_kv_heads is 0");
  if (s.head_dim == 0) return KernelStatus::InvalidArgument("block shape: head_dim is 0");
  if (KvDtypeBytes(s.dtype) == 0)
    return KernelStatus::InvalidArgument("block shape: unknown dtype " +
                                         std::to_string(static_cast<int>(s.dtype)));
  // Each factor is < 2^32; keep the block under 4 GiB (the payload header's u32 sizes).
  const double bytes = double(s.num_layers) * s.planes * s.block_size * s.num_kv_heads *
                       s.head_dim * KvDtypeBytes(s.dtype);
  if (bytes >= 4294967296.0 - 65536.0)
    return KernelStatus::InvalidArgument("block shape: a block must stay under 4 GiB");
  return KernelStatus::Ok();
}

KernelStatus ValidatePagedKvSpec(const PagedKvSpec& spec) {
  if (spec.layout != PagedLayout::kVllmFlashAttn && spec.layout != PagedLayout::kFlashInfer &&
      spec.layout != PagedLayout::kMla)
    return KernelStatus::InvalidArgument("paged KV: unknown layout " +
                                         std::to_string(static_cast<int>(spec.layout)));
  if (spec.num_blocks == 0) return KernelStatus::InvalidArgument("paged KV: num_blocks is 0");
  if (spec.layout == PagedLayout::kMla && spec.num_kv_heads != 1)
    return KernelStatus::InvalidArgument("paged KV: MLA layout needs num_kv_heads == 1, not " +
                                         std::to_string(spec.num_kv_heads));
  if (spec.num_blocks > 0x7fffffffu)
    return KernelStatus::InvalidArgument("paged KV: num_blocks must fit int32 block ids");
  return ValidateBlockShape(spec.block_shape());
}

void WritePayloadHeader(const PayloadHeader& h, std::byte* out) {
  std::memcpy(out, &h, sizeof h);
}

KernelStatus ReadPayloadHeader(std::span<const std::byte> payload, Codec codec,
                               const BlockShape& shape, PayloadHeader* out) {
  if (payload.size() < kPayloadHeaderBytes)
    return KernelStatus::Corruption("payload of " + std::to_string(payload.size()) +
                                    " bytes is shorter than its 16-byte header");
  PayloadHeader h;
  std::memcpy(&h, payload.data(), sizeof h);
  if (h.magic != kPayloadMagic) return KernelStatus::Corruption("payload: bad magic");
  if (h.codec != static_cast<uint16_t>(codec))
    return KernelStatus::Corruption("payload: codec " + std::to_string(h.codec) + ", expected " +
                                    std::to_string(static_cast<int>(codec)) + " (" +
                                    std::string(CodecName(codec)) + ")");
  if (h.dtype != static_cast<uint8_t>(shape.dtype) || h.planes != shape.planes ||
      h.raw_bytes != shape.bytes())
    return KernelStatus::Corruption("payload: dtype/planes/size do not match the block shape");
  if (uint64_t{h.body_bytes} + kPayloadHeaderBytes > payload.size())
    return KernelStatus::Corruption("payload: body of " + std::to_string(h.body_bytes) +
                                    " bytes overruns the " + std::to_string(payload.size()) +
                                    "-byte payload");
  *out = h;
  return KernelStatus::Ok();
}

}  // namespace strata::kernels
