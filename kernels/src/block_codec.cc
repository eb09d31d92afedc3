// BlockCodec (block_codec.h): lossless shuffle + zstd/lz4, and dispatch to the lossy codecs.
// The only file of kernels/ that uses zstd or lz4.
#include "strata_kernels/block_codec.h"

#include <cstring>
#include <string>

#include <lz4.h>
#include <zstd.h>

namespace strata::kernels {

void ShuffleBytePlanes(const std::byte* in, std::byte* out, uint64_t n, uint32_t elem_bytes) {
  if (elem_bytes == 2) {
    for (uint64_t i = 0; i < n; ++i) {
      out[i] = in[2 * i];
      out[n + i] = in[2 * i + 1];
    }
    return;
  }
  for (uint64_t i = 0; i < n; ++i)
    for (uint32_t b = 0; b < elem_bytes; ++b) out[b * n + i] = in[i * elem_bytes + b];
}

void UnshuffleBytePlanes(const std::byte* in, std::byte* out, uint64_t n, uint32_t elem_bytes) {
  if (elem_bytes == 2) {
    for (uint64_t i = 0; i < n; ++i) {
      out[2 * i] = in[i];
      out[2 * i + 1] = in[n + i];
    }
    return;
  }
  for (uint64_t i = 0; i < n; ++i)
    for (uint32_t b = 0; b < elem_bytes; ++b) out[i * elem_bytes + b] = in[b * n + i];
}

BlockCodec::BlockCodec(Codec codec, const BlockShape& shape, const CodecOptions& options)
    : codec_(codec), shape_(shape), options_(options) {}

BlockCodec::~BlockCodec() {
  ZSTD_freeCCtx(static_cast<ZSTD_CCtx*>(zstd_cctx_));
  ZSTD_freeDCtx(static_cast<ZSTD_DCtx*>(zstd_dctx_));
}

KernelStatus BlockCodec::Create(Codec codec, const BlockShape& shape, const CodecOptions& options,
                                std::unique_ptr<BlockCodec>* out) {
  STRATA_KERNELS_RETURN_IF_ERROR(ValidateBlockShape(shape));
  std::unique_ptr<BlockCodec> c(new BlockCodec(codec, shape, options));
  const uint64_t raw = shape.bytes();
  switch (codec) {
    case Codec::kNone:
      c->max_encoded_ = raw;
      break;
    case Codec::kShuffleZstd:
      if (options.zstd_level < ZSTD_minCLevel() || options.zstd_level > ZSTD_maxCLevel())
        return KernelStatus::InvalidArgument("zstd_level " + std::to_string(options.zstd_level) +
                                             " is outside zstd's range");
      c->max_encoded_ = kPayloadHeaderBytes + raw;
      c->scratch_.resize(raw);
      break;
    case Codec::kShuffleLz4:
      if (raw > LZ4_MAX_INPUT_SIZE)
        return KernelStatus::InvalidArgument("block too large for lz4");
      if (options.lz4_acceleration < 1)
        return KernelStatus::InvalidArgument("lz4_acceleration must be >= 1");
      c->max_encoded_ = kPayloadHeaderBytes + raw;
      c->scratch_.resize(raw);
      break;
    case Codec::kFp8E4M3:
    case Codec::kInt8Group:
    case Codec::kInt4Kivi:
      STRATA_KERNELS_RETURN_IF_ERROR(CheckLossyShape(codec, shape));
      c->max_encoded_ = LossyEncodedBytes(codec, shape);
      break;
    default:
      return KernelStatus::InvalidArgument("unknown codec " +
                                           std::to_string(static_cast<int>(codec)));
  }
  *out = std::move(c);
  return KernelStatus::Ok();
}

KernelStatus BlockCodec::Encode(std::span<const std::byte> block, std::span<std::byte> out,
                                uint64_t* written) {
  const uint64_t raw = shape_.bytes();
  if (block.size() != raw)
    return KernelStatus::InvalidArgument("block of " + std::to_string(block.size()) +
                                         " bytes, the shape needs " + std::to_string(raw));
  if (out.size() < max_encoded_)
    return KernelStatus::NoSpace("output of " + std::to_string(out.size()) + " bytes, " +
                                 std::string(CodecName(codec_)) + " needs up to " +
                                 std::to_string(max_encoded_));
  if (codec_ == Codec::kNone) {
    std::memcpy(out.data(), block.data(), raw);
    *written = raw;
    return KernelStatus::Ok();
  }
  if (IsLossyCodec(codec_)) {
    STRATA_KERNELS_RETURN_IF_ERROR(QuantizeBlockCpu(codec_, shape_, block, out));
    *written = max_encoded_;
    return KernelStatus::Ok();
  }
  const uint32_t w = KvDtypeBytes(shape_.dtype);
  const std::byte* src = block.data();
  if (w > 1) {
    ShuffleBytePlanes(block.data(), scratch_.data(), raw / w, w);
    src = scratch_.data();
  }
  std::byte* body = out.data() + kPayloadHeaderBytes;
  // A body that would not be smaller than the raw block is stored instead (body_bytes ==
  // raw_bytes), so a payload never exceeds raw + 16 bytes.
  const uint64_t cap = raw;
  uint64_t body_bytes = raw;
  if (codec_ == Codec::kShuffleZstd) {
    if (!zstd_cctx_) zstd_cctx_ = ZSTD_createCCtx();
    if (!zstd_cctx_) return KernelStatus::NoSpace("ZSTD_createCCtx failed");
    const size_t r = ZSTD_compressCCtx(static_cast<ZSTD_CCtx*>(zstd_cctx_), body, cap, src, raw,
                                       options_.zstd_level);
    if (!ZSTD_isError(r)) body_bytes = r;  // else dstSize_tooSmall: incompressible
  } else {
    const int r = LZ4_compress_fast(reinterpret_cast<const char*>(src),
                                    reinterpret_cast<char*>(body), static_cast<int>(raw),
                                    static_cast<int>(cap),
                                    options_.lz4_acceleration);
    if (r > 0) body_bytes = static_cast<uint64_t>(r);  // 0: did not fit, incompressible
  }
  if (body_bytes >= raw) {  // stored: the shuffled bytes as they are
    std::memcpy(body, src, raw);
    body_bytes = raw;
  }
  PayloadHeader h;
  h.codec = static_cast<uint16_t>(codec_);
  h.dtype = static_cast<uint8_t>(shape_.dtype);
  h.planes = static_cast<uint8_t>(shape_.planes);
  h.raw_bytes = static_cast<uint32_t>(raw);
  h.body_bytes = static_cast<uint32_t>(body_bytes);
  WritePayloadHeader(h, out.data());
  *written = kPayloadHeaderBytes + body_bytes;
  return KernelStatus::Ok();
}

KernelStatus BlockCodec::Decode(std::span<const std::byte> payload, std::span<std::byte> block) {
  const uint64_t raw = shape_.bytes();
  if (block.size() != raw)
    return KernelStatus::InvalidArgument("block of " + std::to_string(block.size()) +
                                         " bytes, the shape needs " + std::to_string(raw));
  if (codec_ == Codec::kNone) {
    if (payload.size() != raw)
      return KernelStatus::Corruption("raw payload of " + std::to_string(payload.size()) +
                                      " bytes for a " + std::to_string(raw) + "-byte block");
    std::memcpy(block.data(), payload.data(), raw);
    return KernelStatus::Ok();
  }
  if (IsLossyCodec(codec_)) return DequantizeBlockCpu(codec_, shape_, payload, block);

  PayloadHeader h;
  STRATA_KERNELS_RETURN_IF_ERROR(ReadPayloadHeader(payload, codec_, shape_, &h));
  const std::byte* body = payload.data() + kPayloadHeaderBytes;
  const uint32_t w = KvDtypeBytes(shape_.dtype);
  std::byte* dst = w > 1 ? scratch_.data() : block.data();
  if (h.body_bytes == raw) {  // stored, not compressed
    std::memcpy(dst, body, raw);
  } else if (codec_ == Codec::kShuffleZstd) {
    if (!zstd_dctx_) zstd_dctx_ = ZSTD_createDCtx();
    if (!zstd_dctx_) return KernelStatus::NoSpace("ZSTD_createDCtx failed");
    const size_t r =
        ZSTD_decompressDCtx(static_cast<ZSTD_DCtx*>(zstd_dctx_), dst, raw, body, h.body_bytes);
    if (ZSTD_isError(r))
      return KernelStatus::Corruption(std::string("zstd: ") + ZSTD_getErrorName(r));
    if (r != raw)
      return KernelStatus::Corruption("zstd stream decoded to " + std::to_string(r) +
                                      " bytes, the block has " + std::to_string(raw));
  } else {
    const int r = LZ4_decompress_safe(reinterpret_cast<const char*>(body),
                                      reinterpret_cast<char*>(dst), static_cast<int>(h.body_bytes),
                                      static_cast<int>(raw));
    if (r < 0) return KernelStatus::Corruption("lz4 stream is damaged");
    if (static_cast<uint64_t>(r) != raw)
      return KernelStatus::Corruption("lz4 stream decoded to " + std::to_string(r) +
                                      " bytes, the block has " + std::to_string(raw));
  }
  if (w > 1) UnshuffleBytePlanes(scratch_.data(), block.data(), raw / w, w);
  return KernelStatus::Ok();
}

}  // namespace strata::kernels
