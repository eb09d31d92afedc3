// PayloadFile: the disk tier's payload back-end, the slab file blocks.data:
// grown with posix_fallocate in steps (so a full disk shows as NoSpace at
// allocation, not mid-write), written and read with O_DIRECT (bounced through a
// per-thread 4 KiB-aligned buffer when the caller's memory or length is not
// aligned), verified reads with Linux AIO (disk_aio.h) and a pread fallback,
// and the compressed stored form of a payload (disk_compression.h). Where in
// the file a payload goes is the caller's (DiskTier's extent allocator,
// disk_extents.h).
//
// Thread-safety: Write, Read*, Compress and Sync may be called from any thread
// (the kernel orders I/O; scratch buffers are per thread). Grow and size() are
// not thread-safe: DiskTier calls them under its mutex. Ownership: the file
// descriptor, closed by the destructor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "store/disk_compression.h"
#include "strata/block_format.h"
#include "strata/result.h"

namespace strata::store::disk {

class PayloadFile {
 public:
  // Opens (or creates) `path`; with `direct_io`, O_DIRECT (every offset and
  // length used must then be 4 KiB-aligned). size() is the file's length
  // rounded down to 4 KiB.
  static Result<std::unique_ptr<PayloadFile>> Open(const std::string& path, bool direct_io);
  ~PayloadFile();
  PayloadFile(const PayloadFile&) = delete;
  PayloadFile& operator=(const PayloadFile&) = delete;

  // Bytes allocated on disk (fallocated, or found at Open).
  uint64_t size() const { return size_; }
  bool direct_io() const { return direct_io_; }
  // Makes the file at least `new_end` bytes long: one step of `extend_bytes`
  // (rounded up, but never past `limit_bytes`), or just `new_end` when a whole
  // step no longer fits on the disk. NoSpace when the filesystem is full
  // (ENOSPC, EDQUOT); the file is unchanged then.
  Status Grow(uint64_t new_end, uint64_t extend_bytes, uint64_t limit_bytes);
  // Writes `payload` at `offset` (zero-padded to 4 KiB with O_DIRECT). NoSpace
  // on ENOSPC.
  Status Write(uint64_t offset, std::span<const std::byte> payload);
  // Reads `len` payload bytes at `offset` (`alloc`: the 4 KiB-rounded extent)
  // into `out`. Corruption when the extent runs past the end of the file.
  Status Read(uint64_t offset, uint32_t alloc, std::span<std::byte> out, size_t len);
  // Reads the payload of `header` and verifies its checksum: with O_DIRECT and
  // AIO, pieces in flight hashed as they land (ReadVerifiedAio); otherwise
  // Read, then VerifyPayload.
  Status ReadVerified(uint64_t offset, uint32_t alloc, std::span<std::byte> out,
                      const BlockHeader& header);
  // Reads a compressed payload (`stored` bytes in `alloc` on disk),
  // decompresses it into `out` (the raw length) and verifies the raw bytes
  // against `header`'s checksum. Sets *undecodable when the stored bytes do not
  // decompress (Corruption is returned too).
  Status ReadCompressed(uint64_t offset, uint32_t alloc, uint32_t stored,
                        DiskCompression compression, std::span<std::byte> out,
                        const BlockHeader& header, bool* undecodable);
  // fdatasync.
  Status Sync();

 private:
  PayloadFile(std::string path, int fd, bool direct_io, uint64_t size)
      : path_(std::move(path)), fd_(fd), direct_io_(direct_io), size_(size) {}
  const std::string path_;
  const int fd_;
  const bool direct_io_;
  uint64_t size_;
};

// Compresses `payload` into this thread's 4 KiB-aligned scratch, zero-padded to
// 4 KiB; the span covers the compressed bytes (the padding follows them, so an
// O_DIRECT write of the rounded length needs no bounce). Empty when the
// compressed form would not take fewer 4 KiB pages than the raw payload (it is
// then stored raw). Valid until this thread's next call.
Result<std::span<const std::byte>> CompressForDisk(const DiskCompressionOptions& options,
                                                   std::span<const std::byte> payload);

}  // namespace strata::store::disk
