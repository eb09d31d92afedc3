// CPU reference of the lossy codecs (codec.h). The per-element arithmetic is quant_math.h, shared
// with cuda/quant.cu; this file only walks the groups in the payload order codec.h draws.
#include <cstring>
#include <string>

#include "strata_kernels/codec.h"
#include "strata_kernels/quant_math.h"

namespace strata::kernels {
namespace {

struct View {
  const uint16_t* in;
  bool bf16;
  float At(uint64_t i) const { return LoadKv16(bf16, in, i); }
};

KernelStatus NonFinite(uint64_t elem) {
  return KernelStatus::OutOfRange("element " + std::to_string(elem) +
                                  " is NaN or infinite: lossy codecs need finite KV");
}

template <typename T>
T* At(std::span<std::byte> buf, uint64_t offset) {
  return reinterpret_cast<T*>(buf.data() + offset);
}
template <typename T>
const T* At(std::span<const std::byte> buf, uint64_t offset) {
  return reinterpret_cast<const T*>(buf.data() + offset);
}

KernelStatus EncodeFp8(const BlockShape& s, const LossyLayout& lay, View v,
                       std::span<std::byte> out) {
  float* scales = At<float>(out, lay.scale_offset);
  uint8_t* q = At<uint8_t>(out, lay.data_offset);
  const uint64_t n = s.chunk_elems();
  for (uint64_t c = 0; c < s.num_chunks(); ++c) {
    const uint64_t base = c * n;
    float amax = 0.0f;
    for (uint64_t e = 0; e < n; ++e) {
      const float x = v.At(base + e);
      if (!IsFiniteFloat(x)) return NonFinite(base + e);
      amax = MaxF(amax, AbsF(x));
    }
    const SymScale ss = MakeSymScale(amax, kE4m3Max);
    scales[c] = ss.scale;
    for (uint64_t e = 0; e < n; ++e) q[base + e] = Fp8Quant(v.At(base + e), ss.inv);
  }
  return KernelStatus::Ok();
}

KernelStatus EncodeInt8(const BlockShape& s, const LossyLayout& lay, View v,
                        std::span<std::byte> out) {
  float* scales = At<float>(out, lay.scale_offset);
  int8_t* q = At<int8_t>(out, lay.data_offset);
  const uint32_t g = lay.group;
  const uint64_t groups = s.elems() / g;
  for (uint64_t gi = 0; gi < groups; ++gi) {
    const uint64_t base = gi * g;
    float amax = 0.0f;
    for (uint32_t e = 0; e < g; ++e) {
      const float x = v.At(base + e);
      if (!IsFiniteFloat(x)) return NonFinite(base + e);
      amax = MaxF(amax, AbsF(x));
    }
    const SymScale ss = MakeSymScale(amax, 127.0f);
    scales[gi] = ss.scale;
    for (uint32_t e = 0; e < g; ++e) q[base + e] = Int8Quant(v.At(base + e), ss.inv);
  }
  return KernelStatus::Ok();
}

// One INT4 group: `count` elements at base + k * stride.
KernelStatus EncodeInt4Group(View v, uint64_t base, uint64_t stride, uint64_t count,
                             uint16_t* scale_out, uint16_t* min_out, uint8_t* nibbles) {
  float mn = 0.0f, mx = 0.0f;
  for (uint64_t k = 0; k < count; ++k) {
    const uint64_t e = base + k * stride;
    const float x = v.At(e);
    if (!IsFiniteFloat(x)) return NonFinite(e);
    if (AbsF(x) > kInt4MaxAbs)
      return KernelStatus::OutOfRange("element " + std::to_string(e) +
                                      " exceeds 65504, the range of int4_kivi's fp16 scales");
    mn = k == 0 ? x : MinF(mn, x);
    mx = k == 0 ? x : MaxF(mx, x);
  }
  const Int4Params p = MakeInt4Params(mn, mx);
  *scale_out = p.scale_h;
  *min_out = p.min_h;
  for (uint64_t k = 0; k < count; ++k) {
    const uint64_t e = base + k * stride;
    nibbles[e >> 1] |= static_cast<uint8_t>(Int4Quant(v.At(e), p.min_f, p.inv) << ((e & 1) * 4));
  }
  return KernelStatus::Ok();
}

KernelStatus EncodeInt4(const BlockShape& s, const LossyLayout& lay, View v,
                        std::span<std::byte> out) {
  uint16_t* kscale = At<uint16_t>(out, lay.scale_offset);
  uint16_t* kmin = At<uint16_t>(out, lay.kmin_offset);
  uint8_t* nib = At<uint8_t>(out, lay.data_offset);
  std::memset(nib, 0, (s.elems() + 1) / 2);
  const uint64_t row = uint64_t{s.num_kv_heads} * s.head_dim;
  const uint64_t chunk = s.chunk_elems();
  const uint64_t vgroups_per_layer = s.block_size * row / lay.group;
  for (uint32_t l = 0; l < s.num_layers; ++l) {
    const uint64_t kbase = uint64_t{l} * s.planes * chunk;
    for (uint64_t j = 0; j < row; ++j) {
      STRATA_KERNELS_RETURN_IF_ERROR(EncodeInt4Group(v, kbase + j, row, s.block_size,
                                                     &kscale[l * row + j], &kmin[l * row + j],
                                                     nib));
    }
    if (s.planes == 2) {
      uint16_t* vscale = At<uint16_t>(out, lay.vscale_offset);
      uint16_t* vmin = At<uint16_t>(out, lay.vmin_offset);
      const uint64_t vbase = kbase + chunk;
      for (uint64_t gi = 0; gi < vgroups_per_layer; ++gi) {
        const uint64_t idx = l * vgroups_per_layer + gi;
        STRATA_KERNELS_RETURN_IF_ERROR(EncodeInt4Group(v, vbase + gi * lay.group, 1, lay.group,
                                                       &vscale[idx], &vmin[idx], nib));
      }
    }
  }
  return KernelStatus::Ok();
}

void DecodeFp8(const BlockShape& s, const LossyLayout& lay, std::span<const std::byte> in,
               bool bf16, uint16_t* out) {
  const float* scales = At<float>(in, lay.scale_offset);
  const uint8_t* q = At<uint8_t>(in, lay.data_offset);
  const uint64_t n = s.chunk_elems();
  for (uint64_t c = 0; c < s.num_chunks(); ++c)
    for (uint64_t e = c * n; e < (c + 1) * n; ++e)
      out[e] = StoreKv16(bf16, Fp8Dequant(q[e], scales[c]));
}

void DecodeInt8(const BlockShape& s, const LossyLayout& lay, std::span<const std::byte> in,
                bool bf16, uint16_t* out) {
  const float* scales = At<float>(in, lay.scale_offset);
  const int8_t* q = At<int8_t>(in, lay.data_offset);
  const uint64_t n = s.elems();
  for (uint64_t e = 0; e < n; ++e) out[e] = StoreKv16(bf16, Int8Dequant(q[e], scales[e / lay.group]));
}

void DecodeInt4(const BlockShape& s, const LossyLayout& lay, std::span<const std::byte> in,
                bool bf16, uint16_t* out) {
  const uint16_t* kscale = At<uint16_t>(in, lay.scale_offset);
  const uint16_t* kmin = At<uint16_t>(in, lay.kmin_offset);
  const uint8_t* nib = At<uint8_t>(in, lay.data_offset);
  const uint64_t row = uint64_t{s.num_kv_heads} * s.head_dim;
  const uint64_t chunk = s.chunk_elems();
  const uint64_t vgroups_per_layer = s.block_size * row / lay.group;
  for (uint32_t l = 0; l < s.num_layers; ++l) {
    for (uint32_t p = 0; p < s.planes; ++p) {
      const uint64_t base = (uint64_t{l} * s.planes + p) * chunk;
      for (uint64_t k = 0; k < chunk; ++k) {
        const uint64_t e = base + k;
        const uint8_t q = (nib[e >> 1] >> ((e & 1) * 4)) & 0xf;
        uint64_t pi;
        const uint16_t *sc, *mn;
        if (p == 0) {
          pi = l * row + k % row;
          sc = kscale;
          mn = kmin;
        } else {
          pi = l * vgroups_per_layer + k / lay.group;
          sc = At<uint16_t>(in, lay.vscale_offset);
          mn = At<uint16_t>(in, lay.vmin_offset);
        }
        const Int4Params prm = Int4ParamsFromStored(mn[pi], sc[pi]);
        out[e] = StoreKv16(bf16, Int4Dequant(q, prm.min_f, prm.scale_f));
      }
    }
  }
}

}  // namespace

KernelStatus CheckLossyShape(Codec codec, const BlockShape& shape) {
  if (!IsLossyCodec(codec))
    return KernelStatus::InvalidArgument("codec " + std::string(CodecName(codec)) +
                                         " is not a lossy codec");
  STRATA_KERNELS_RETURN_IF_ERROR(ValidateBlockShape(shape));
  if (shape.dtype != KvDtype::kFloat16 && shape.dtype != KvDtype::kBFloat16)
    return KernelStatus::NotSupported(std::string(CodecName(codec)) +
                                      " quantizes fp16 or bf16 KV, not " +
                                      std::string(KvDtypeName(shape.dtype)));
  return KernelStatus::Ok();
}

uint64_t LossyEncodedBytes(Codec codec, const BlockShape& shape) {
  if (!CheckLossyShape(codec, shape).ok()) return 0;
  return ComputeLossyLayout(codec, shape).total_bytes;
}

KernelStatus QuantizeBlockCpu(Codec codec, const BlockShape& shape,
                              std::span<const std::byte> block, std::span<std::byte> out) {
  STRATA_KERNELS_RETURN_IF_ERROR(CheckLossyShape(codec, shape));
  if (block.size() != shape.bytes())
    return KernelStatus::InvalidArgument("block of " + std::to_string(block.size()) +
                                         " bytes, the shape needs " + std::to_string(shape.bytes()));
  const LossyLayout lay = ComputeLossyLayout(codec, shape);
  if (out.size() < lay.total_bytes)
    return KernelStatus::NoSpace("output of " + std::to_string(out.size()) + " bytes, " +
                                 std::string(CodecName(codec)) + " needs " +
                                 std::to_string(lay.total_bytes));
  if (reinterpret_cast<uintptr_t>(block.data()) % 2 != 0 ||
      reinterpret_cast<uintptr_t>(out.data()) % 4 != 0)
    return KernelStatus::InvalidArgument("block must be 2-byte and output 4-byte aligned");
  // Section padding is zeroed so that equal blocks give equal payload bytes.
  std::memset(out.data(), 0, lay.data_offset);
  PayloadHeader h;
  h.codec = static_cast<uint16_t>(codec);
  h.dtype = static_cast<uint8_t>(shape.dtype);
  h.planes = static_cast<uint8_t>(shape.planes);
  h.raw_bytes = static_cast<uint32_t>(shape.bytes());
  h.body_bytes = static_cast<uint32_t>(lay.total_bytes - kPayloadHeaderBytes);
  WritePayloadHeader(h, out.data());
  const View v{reinterpret_cast<const uint16_t*>(block.data()), shape.dtype == KvDtype::kBFloat16};
  switch (codec) {
    case Codec::kFp8E4M3: return EncodeFp8(shape, lay, v, out);
    case Codec::kInt8Group: return EncodeInt8(shape, lay, v, out);
    case Codec::kInt4Kivi: return EncodeInt4(shape, lay, v, out);
    default: return KernelStatus::InvalidArgument("not a lossy codec");
  }
}

KernelStatus DequantizeBlockCpu(Codec codec, const BlockShape& shape,
                                std::span<const std::byte> payload, std::span<std::byte> block) {
  STRATA_KERNELS_RETURN_IF_ERROR(CheckLossyShape(codec, shape));
  if (block.size() != shape.bytes())
    return KernelStatus::InvalidArgument("block of " + std::to_string(block.size()) +
                                         " bytes, the shape needs " + std::to_string(shape.bytes()));
  PayloadHeader h;
  STRATA_KERNELS_RETURN_IF_ERROR(ReadPayloadHeader(payload, codec, shape, &h));
  const LossyLayout lay = ComputeLossyLayout(codec, shape);
  if (uint64_t{h.body_bytes} + kPayloadHeaderBytes != lay.total_bytes)
    return KernelStatus::Corruption("payload: body of " + std::to_string(h.body_bytes) +
                                    " bytes, " + std::string(CodecName(codec)) + " needs " +
                                    std::to_string(lay.total_bytes - kPayloadHeaderBytes));
  if (reinterpret_cast<uintptr_t>(block.data()) % 2 != 0 ||
      reinterpret_cast<uintptr_t>(payload.data()) % 4 != 0)
    return KernelStatus::InvalidArgument("block must be 2-byte and payload 4-byte aligned");
  const bool bf16 = shape.dtype == KvDtype::kBFloat16;
  uint16_t* out = reinterpret_cast<uint16_t*>(block.data());
  switch (codec) {
    case Codec::kFp8E4M3: DecodeFp8(shape, lay, payload, bf16, out); break;
    case Codec::kInt8Group: DecodeInt8(shape, lay, payload, bf16, out); break;
    case Codec::kInt4Kivi: DecodeInt4(shape, lay, payload, bf16, out); break;
    default: return KernelStatus::InvalidArgument("not a lossy codec");
  }
  return KernelStatus::Ok();
}

}  // namespace strata::kernels
