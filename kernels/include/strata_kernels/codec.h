// Block payload codecs: ids, the encoded payload format, and the CPU reference of the lossy
// (quantizing) codecs. The lossless codecs (shuffle + zstd/lz4) live in block_codec.h, which also
// dispatches to the lossy ones; the CUDA versions of the lossy codecs are in cuda_kernels.h.
//
// Codec ids MUST equal strata::Codec (lib/include/strata/namespace.h): the codec is part of the
// namespace, so blocks of different codecs never share a key. tests/kernels checks the values.
//
// Encoded payload, little-endian, every section 16-byte aligned from the payload start:
//
//   offset 0  PayloadHeader (16 bytes)
//             u32 magic "SKV1" | u16 codec | u8 dtype | u8 planes | u32 raw_bytes | u32 body_bytes
//   offset 16 body (body_bytes), by codec:
//     kShuffleZstd / kShuffleLz4: the compressed byte-plane-shuffled block (block_codec.h)
//     kFp8E4M3   f32 scale[layers*planes]            one per (layer, plane) chunk: amax / 448
//                u8  e4m3[elems]                     Strata block order
//     kInt8Group f32 scale[elems / G]                one per group of G consecutive elements of a
//                                                    token's head: amax / 127
//                i8  q[elems]                        symmetric, q in [-127, 127]
//     kInt4Kivi  f16 kscale[layers][heads*dim]       keys: per channel over the block's tokens
//                f16 kmin  [layers][heads*dim]
//                f16 vscale[layers][tokens*heads*dim / Gv]   values: per token, groups of Gv
//                f16 vmin  [layers][tokens*heads*dim / Gv]   (absent for MLA: planes == 1)
//                u8  nibbles[ceil(elems / 2)]        element e in byte e/2, low nibble if e even
//   G  = min(64, largest power of two dividing head_dim)
//   Gv = min(32, largest power of two dividing head_dim)
//   For MLA (planes == 1) INT4 treats the latent like keys (per channel).
//
// Error bounds (x the input, x' the decoded value, out_ulp the half-ulp of the output dtype at x'):
//   kFp8E4M3:   |x - x'| <= 2^-4 |x| + 2^-10 * scale + out_ulp
//   kInt8Group: |x - x'| <= amax_group / 254 + out_ulp
//   kInt4Kivi:  |x - x'| <= s / 2 + out_ulp, s = (max - min_f16_down) / 15 rounded up to f16
// Lossy codecs take fp16 or bf16 blocks only, and reject non-finite input (OutOfRange); INT4 also
// rejects |x| > 65504 (its scales are fp16).
//
// Thread-safety: pure functions; reentrant.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "strata_kernels/hd.h"
#include "strata_kernels/kernel_status.h"
#include "strata_kernels/kv_layout.h"

namespace strata::kernels {

// Numeric values MUST equal strata::Codec's.
enum class Codec : uint16_t {
  kNone = 0,
  kShuffleZstd = 1,
  kShuffleLz4 = 2,
  kFp8E4M3 = 3,
  kInt8Group = 4,
  kInt4Kivi = 5,
};

std::string_view CodecName(Codec codec);
inline bool IsLossyCodec(Codec c) {
  return c == Codec::kFp8E4M3 || c == Codec::kInt8Group || c == Codec::kInt4Kivi;
}
inline bool IsLosslessCodec(Codec c) { return c == Codec::kShuffleZstd || c == Codec::kShuffleLz4; }

inline constexpr uint32_t kPayloadMagic = 0x31564B53u;  // "SKV1" little-endian
inline constexpr uint32_t kPayloadHeaderBytes = 16;

struct PayloadHeader {
  uint32_t magic = kPayloadMagic;
  uint16_t codec = 0;
  uint8_t dtype = 0;
  uint8_t planes = 0;
  uint32_t raw_bytes = 0;   // the decoded block's bytes
  uint32_t body_bytes = 0;  // bytes after the header
};
static_assert(sizeof(PayloadHeader) == kPayloadHeaderBytes);

// Writes/reads the header (little-endian hosts only: Strata builds for x86-64 and aarch64).
void WritePayloadHeader(const PayloadHeader& h, std::byte* out);
// Checks magic, codec, dtype, planes, raw_bytes against what `shape` and `codec` expect and that
// body_bytes fits `payload`; Corruption otherwise.
KernelStatus ReadPayloadHeader(std::span<const std::byte> payload, Codec codec,
                               const BlockShape& shape, PayloadHeader* out);

STRATA_KERNELS_HD inline uint32_t LargestPow2Divisor(uint32_t v, uint32_t cap) {
  uint32_t g = 1;
  while (g < cap && v % (g * 2) == 0) g *= 2;
  return g;
}
STRATA_KERNELS_HD inline uint64_t AlignUp16(uint64_t v) { return (v + 15) & ~uint64_t{15}; }

// Byte offsets of the sections of a lossy payload (from the payload start).
struct LossyLayout {
  uint32_t group = 0;          // G (INT8) or Gv (INT4 values); chunk_elems for FP8
  uint64_t scale_offset = 0;   // FP8/INT8 scales, INT4 kscale
  uint64_t kmin_offset = 0;    // INT4
  uint64_t vscale_offset = 0;  // INT4 with planes == 2
  uint64_t vmin_offset = 0;    // INT4 with planes == 2
  uint64_t data_offset = 0;
  uint64_t total_bytes = 0;    // header + body
};

STRATA_KERNELS_HD inline LossyLayout ComputeLossyLayout(Codec codec, const BlockShape& s) {
  LossyLayout l;
  const uint64_t elems = s.elems();
  const uint64_t row = uint64_t{s.num_kv_heads} * s.head_dim;  // elements of one token
  l.scale_offset = kPayloadHeaderBytes;
  switch (codec) {
    case Codec::kFp8E4M3:
      l.group = static_cast<uint32_t>(s.chunk_elems());
      l.data_offset = l.scale_offset + AlignUp16(4 * s.num_chunks());
      l.total_bytes = l.data_offset + elems;
      break;
    case Codec::kInt8Group:
      l.group = LargestPow2Divisor(s.head_dim, 64);
      l.data_offset = l.scale_offset + AlignUp16(4 * (elems / l.group));
      l.total_bytes = l.data_offset + elems;
      break;
    case Codec::kInt4Kivi: {
      l.group = LargestPow2Divisor(s.head_dim, 32);
      const uint64_t kparams = 2 * uint64_t{s.num_layers} * row;
      l.kmin_offset = l.scale_offset + AlignUp16(kparams);
      uint64_t next = l.kmin_offset + AlignUp16(kparams);
      if (s.planes == 2) {
        const uint64_t vparams = 2 * uint64_t{s.num_layers} * s.block_size * row / l.group;
        l.vscale_offset = next;
        l.vmin_offset = l.vscale_offset + AlignUp16(vparams);
        next = l.vmin_offset + AlignUp16(vparams);
      }
      l.data_offset = next;
      l.total_bytes = l.data_offset + (elems + 1) / 2;
      break;
    }
    default:
      break;
  }
  return l;
}

// OK when `codec` is lossy and can encode blocks of `shape` (fp16/bf16, a valid shape).
KernelStatus CheckLossyShape(Codec codec, const BlockShape& shape);

// Bytes of a lossy payload for `shape` (header included); 0 if CheckLossyShape fails.
uint64_t LossyEncodedBytes(Codec codec, const BlockShape& shape);

// Quantizes one Strata block. On success out[0, LossyEncodedBytes) holds the payload.
// REQUIRES: block.size() == shape.bytes(); out.size() >= LossyEncodedBytes(codec, shape).
// OutOfRange for NaN/Inf input (and |x| > 65504 for INT4); `out` may then hold partial bytes.
KernelStatus QuantizeBlockCpu(Codec codec, const BlockShape& shape,
                              std::span<const std::byte> block, std::span<std::byte> out);

// Decodes a lossy payload into a Strata block of `shape`.
// REQUIRES: block.size() == shape.bytes(). Corruption on a bad header or size.
KernelStatus DequantizeBlockCpu(Codec codec, const BlockShape& shape,
                                std::span<const std::byte> payload, std::span<std::byte> block);

}  // namespace strata::kernels
