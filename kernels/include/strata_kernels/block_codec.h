// BlockCodec: the CPU encoder/decoder of one namespace's blocks, for every codec of codec.h:
//   kNone                   payload = the raw block bytes (no header)
//   kShuffleZstd/kShuffleLz4  header + zstd/lz4 of the byte-plane-shuffled block (lossless); a
//                           body that would not be smaller is stored shuffled, uncompressed, and
//                           marked by body_bytes == raw_bytes
//   kFp8E4M3/kInt8Group/kInt4Kivi  header + QuantizeBlockCpu's body (lossy)
//
// Byte-plane shuffle: an array of n elements of w bytes becomes w planes of n bytes, plane b
// holding byte b of every element (for fp16/bf16: all low bytes, then all high bytes). The high
// bytes (sign, exponent) of KV repeat a lot; the low (mantissa) bytes barely compress. 1-byte
// dtypes are not shuffled.
//
// Thread-safety: a BlockCodec keeps zstd contexts and a scratch buffer, so one object serves one
// thread at a time; make one per worker thread. Owns nothing the caller passes in.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "strata_kernels/codec.h"
#include "strata_kernels/kernel_status.h"
#include "strata_kernels/kv_layout.h"

namespace strata::kernels {

struct CodecOptions {
  // zstd compression level for kShuffleZstd (1..19; negative levels are faster). Default: 1.
  int zstd_level = 1;
  // LZ4_compress_fast acceleration for kShuffleLz4 (>= 1; higher is faster). Default: 1.
  int lz4_acceleration = 1;
};

// Byte-plane shuffle of n elements of elem_bytes bytes (see above). REQUIRES: in and out do not
// overlap and hold n * elem_bytes bytes.
void ShuffleBytePlanes(const std::byte* in, std::byte* out, uint64_t n, uint32_t elem_bytes);
void UnshuffleBytePlanes(const std::byte* in, std::byte* out, uint64_t n, uint32_t elem_bytes);

class BlockCodec {
 public:
  // InvalidArgument/NotSupported for a bad shape or a codec that cannot take it.
  static KernelStatus Create(Codec codec, const BlockShape& shape, const CodecOptions& options,
                             std::unique_ptr<BlockCodec>* out);
  ~BlockCodec();
  BlockCodec(const BlockCodec&) = delete;
  BlockCodec& operator=(const BlockCodec&) = delete;

  Codec codec() const { return codec_; }
  const BlockShape& shape() const { return shape_; }
  // An upper bound of Encode's output (exact for kNone and the lossy codecs; raw + 16 for the
  // lossless ones, which store a block that does not compress).
  uint64_t max_encoded_bytes() const { return max_encoded_; }

  // REQUIRES: block.size() == shape().bytes(). NoSpace if `out` is below max_encoded_bytes().
  // Sets *written on success only.
  KernelStatus Encode(std::span<const std::byte> block, std::span<std::byte> out,
                      uint64_t* written);
  // REQUIRES: block.size() == shape().bytes(). Corruption for a payload that fails to decode to
  // exactly one block (bad header, truncated, damaged compressed stream).
  KernelStatus Decode(std::span<const std::byte> payload, std::span<std::byte> block);

 private:
  BlockCodec(Codec codec, const BlockShape& shape, const CodecOptions& options);

  Codec codec_;
  BlockShape shape_;
  CodecOptions options_;
  uint64_t max_encoded_ = 0;
  void* zstd_cctx_ = nullptr;  // ZSTD_CCtx*, created on first use
  void* zstd_dctx_ = nullptr;  // ZSTD_DCtx*
  std::vector<std::byte> scratch_;
};

}  // namespace strata::kernels
