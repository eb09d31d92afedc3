// Lossless compression of disk-tier payloads (docs/store.md, "Compression on disk"): which codec
// (none, lz4, zstd at a level), the `disk_compression` setting's syntax, and one-shot compression
// and decompression with per-thread contexts. zstd and lz4 are included only in the .cc file.
//
// The disk tier compresses at Put (for write-back: on the demotion queue's writer thread, never on
// an evicting put) and decompresses at Get (promotion, prefetch, and every read that serves a
// client or a peer), then verifies the block's XXH3-64, which is always over the raw payload.
//
// Thread-safety: every function may be called from any thread (contexts are per thread).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "strata/result.h"
#include "strata/status.h"

namespace strata::store {

// How a disk record's payload is stored. The values are written in disk records: never reuse.
enum class DiskCompression : uint8_t {
  kNone = 0,  // raw payload bytes
  kLz4 = 1,   // one LZ4 block (LZ4_compress_default)
  kZstd = 2,  // one zstd frame
};

struct DiskCompressionOptions {
  // Default: kNone (payloads written raw).
  DiskCompression kind = DiskCompression::kNone;
  // zstd's level when kind is kZstd: ZSTD_minCLevel() (negative: faster) .. ZSTD_maxCLevel();
  // 0 means zstd's own default (3). Not stored: any level decompresses the same way. Default: 1.
  int zstd_level = 1;
};

// Parses the setting: "none", "lz4", "zstd" (level 1) or "zstd:LEVEL". InvalidArgument, naming
// the accepted forms, otherwise.
Result<DiskCompressionOptions> ParseDiskCompression(std::string_view text);
// "none", "lz4", "zstd:LEVEL": what ParseDiskCompression reads back to the same options.
std::string DiskCompressionName(const DiskCompressionOptions& options);
// "none", "lz4" or "zstd"; "unknown" for a value this build does not know.
std::string_view DiskCompressionName(DiskCompression kind);
// True for the values this build can decompress (a record with another value is refused).
bool IsKnownDiskCompression(uint8_t value);

// Compresses `src` into `dst` and returns the compressed length, or 0 when the output does not fit
// in `dst` (the caller sizes `dst` to the largest output worth keeping, so 0 means "store raw").
// REQUIRES: options.kind != kNone.
size_t CompressPayload(const DiskCompressionOptions& options, std::span<const std::byte> src,
                       std::span<std::byte> dst);

// Decompresses `src` into `dst`, whose size is the raw payload's length. Corruption when the
// stored bytes are not a valid stream of `kind` or do not decompress to exactly dst.size() bytes
// (a damaged or truncated record); never reads or writes outside the two spans.
Status DecompressPayload(DiskCompression kind, std::span<const std::byte> src,
                         std::span<std::byte> dst);

}  // namespace strata::store
