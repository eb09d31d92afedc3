// GatherWithChecksum: a payload assembled row by row from anywhere (a daemon's cross-memory
// gather of head shards out of engine chunks), written to its destination with non-temporal
// stores and hashed (XXH3-64, the PayloadChecksum of the whole payload) from the same registers:
// one pass over each byte. The whole-buffer forms, CopyWithChecksum and ScatterWithChecksum, are
// in strata/block_format.h; all three share the fused loop of checksum_copy.cc.
//
// Why: the gather used to copy each head's rows into an L1 piece, hash the piece (a second read)
// and stream it out (a third): three passes of CPU work per byte, on the core that also runs the
// kernel's process_vm_readv copy (docs/benchmarks.md, "Engine KV in huge pages").
//
// StreamCopy and StreamScatter: the same copy loop without the hash (a load's copy out of the
// pool when verify_loads is off: docs/data-plane.md, "Verified at commit, copied at load").
// Non-temporal stores, as in the fused pass: glibc's memcpy writes a destination of these sizes
// (64 KiB to a few MiB, below its non-temporal threshold) with ordinary stores, each line first
// read for ownership, and measured slower than the fused copy-and-hash pass itself when the
// destination was not in cache (docs/benchmarks.md, "Loads without the client's hash").
//
// Thread-safety: one object per payload, used by one thread; the copies are pure functions.
#pragma once

#include <cstddef>
#include <cstdint>

namespace strata {

// Copies n bytes from src to dst with non-temporal stores where that applies (AVX2, dst 16-byte
// aligned, n above 240 bytes; else memcpy), fenced before it returns.
void StreamCopy(std::byte* dst, const std::byte* src, size_t n);

// As StreamCopy for a destination in pieces: src[i * piece_bytes, (i + 1) * piece_bytes) goes to
// dst[i] (the last piece may be shorter).
void StreamScatter(const std::byte* src, size_t n, size_t piece_bytes, std::byte* const* dst);

class GatherWithChecksum {
 public:
  // Whether the fused form takes a payload of `length` bytes at `dst` (AVX2; dst 32-byte aligned;
  // length a multiple of 64 and above XXH3's short-input sizes): where it does not, callers
  // copy, then hash with PayloadChecksumStream.
  static bool Fits(const std::byte* dst, uint64_t length);

  // REQUIRES: Fits(dst, length).
  GatherWithChecksum(std::byte* dst, uint64_t length);

  // Appends `rows` rows of `row_bytes` bytes, the first at `src` and each `stride` bytes after
  // the previous one. REQUIRES: row_bytes a multiple of 64; at most `length` bytes appended in
  // all; src readable, not overlapping the destination.
  void AppendRows(const std::byte* src, size_t rows, size_t stride, size_t row_bytes);

  // The checksum, equal to PayloadChecksum of the `length` bytes appended; fences the stores
  // (the bytes are in memory before a commit built on it is answered).
  // REQUIRES: exactly `length` bytes appended.
  uint64_t Finish();

 private:
  alignas(32) uint64_t acc_[8];
  std::byte* dst_;
  uint64_t stripes_;    // of the payload: length / 64
  uint64_t next_ = 0;   // stripes appended
  uint64_t last_ = 0;   // checksum of the payload, set when its last stripe is appended
};

}  // namespace strata
