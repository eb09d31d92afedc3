#include "store/disk_payload_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "store/disk_aio.h"
#include "store/disk_record.h"

namespace strata::store::disk {
namespace {

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

// Per-thread scratch buffers: kBounce for O_DIRECT bounces of unaligned caller
// buffers, kStored for compressed payloads on their way to or from the disk
// (both may be live in one call).
enum Scratch { kBounce = 0, kStored = 1 };
std::byte* AlignedScratch(size_t bytes, Scratch which = kBounce) {
  struct Buf {
    std::byte* p = nullptr;
    size_t n = 0;
    ~Buf() { std::free(p); }
  };
  thread_local Buf bufs[2];
  Buf& buf = bufs[which];
  if (buf.n < bytes) {
    std::free(buf.p);
    buf.p = static_cast<std::byte*>(std::aligned_alloc(kAlign, RoundUp(bytes, kAlign)));
    buf.n = buf.p ? RoundUp(bytes, kAlign) : 0;
  }
  return buf.p;
}

bool Aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % kAlign == 0; }

}  // namespace

Result<std::unique_ptr<PayloadFile>> PayloadFile::Open(const std::string& path, bool direct_io) {
  const int flags = O_RDWR | O_CREAT | O_CLOEXEC | (direct_io ? O_DIRECT : 0);
  // Every tenant's KV: readable by the daemon's user only (an older version's 0644 file too).
  const int fd = ::open(path.c_str(), flags, 0600);
  if (fd < 0) return Status::IOError(Errno("open " + path));
  struct stat st {};
  if (fstat(fd, &st) != 0 || ((st.st_mode & 077) != 0 && ::fchmod(fd, st.st_mode & 0700) != 0)) {
    Status err = Status::IOError(Errno("fstat or fchmod 0600 " + path));
    ::close(fd);
    return err;
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size) / kAlign * kAlign;
  return std::unique_ptr<PayloadFile>(new PayloadFile(path, fd, direct_io, size));
}

PayloadFile::~PayloadFile() { ::close(fd_); }

Status PayloadFile::Sync() {
  if (fdatasync(fd_) != 0) return Status::IOError(Errno("disk tier: fdatasync"));
  return Status::OK();
}

Status PayloadFile::Grow(uint64_t new_end, uint64_t extend_bytes, uint64_t limit_bytes) {
  if (new_end <= size_) return Status::OK();
  const uint64_t target = std::min(RoundUp(new_end, extend_bytes), RoundUp(limit_bytes, kAlign));
  uint64_t want = std::max(target, new_end);
  int rc = posix_fallocate(fd_, static_cast<off_t>(size_), static_cast<off_t>(want - size_));
  if ((rc == ENOSPC || rc == EDQUOT) && want > new_end) {  // a whole step does not fit: try less
    want = new_end;
    rc = posix_fallocate(fd_, static_cast<off_t>(size_), static_cast<off_t>(want - size_));
  }
  if (rc != 0) {
    errno = rc;
    if (rc == ENOSPC || rc == EDQUOT) return Status::NoSpace(Errno("disk tier: growing " + path_));
    return Status::IOError(Errno("disk tier: fallocate blocks.data"));
  }
  size_ = want;
  return Status::OK();
}

Status PayloadFile::Write(uint64_t offset, std::span<const std::byte> payload) {
  const size_t alloc = RoundUp(payload.size(), kAlign);
  const std::byte* src = payload.data();
  if (direct_io_ && (!Aligned(src) || alloc != payload.size())) {
    std::byte* buf = AlignedScratch(alloc);
    if (buf == nullptr)
      return Status::ResourceExhausted("disk tier: no memory for a bounce buffer");
    std::memcpy(buf, src, payload.size());
    std::memset(buf + payload.size(), 0, alloc - payload.size());
    src = buf;
  }
  size_t done = 0;
  const size_t n = direct_io_ ? alloc : payload.size();
  while (done < n) {
    const ssize_t w = pwrite(fd_, src + done, n - done, static_cast<off_t>(offset + done));
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOSPC || errno == EDQUOT) return Status::NoSpace(Errno("disk tier: pwrite"));
      return Status::IOError(Errno("disk tier: pwrite"));
    }
    done += static_cast<size_t>(w);
  }
  return Status::OK();
}

Status PayloadFile::Read(uint64_t offset, uint32_t alloc, std::span<std::byte> out, size_t len) {
  std::byte* dst = out.data();
  const bool bounce = direct_io_ && (!Aligned(dst) || out.size() < alloc);
  if (bounce) {
    dst = AlignedScratch(alloc);
    if (dst == nullptr)
      return Status::ResourceExhausted("disk tier: no memory for a bounce buffer");
  }
  const size_t n = direct_io_ ? alloc : len;
  size_t done = 0;
  while (done < n) {
    const ssize_t r = pread(fd_, dst + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::IOError(Errno("disk tier: pread"));
    }
    if (r == 0) return Status::Corruption("disk tier: payload extends past the end of blocks.data");
    done += static_cast<size_t>(r);
    // O_DIRECT reads of an aligned extent come short only at the end of the
    // file; the rest cannot be asked for at an unaligned offset (EINVAL), and
    // is not there anyway.
    if (direct_io_ && done < n && (offset + done) % kAlign != 0)
      return Status::Corruption("disk tier: payload extends past the end of blocks.data");
  }
  if (bounce) std::memcpy(out.data(), dst, len);
  return Status::OK();
}

Status PayloadFile::ReadVerified(uint64_t offset, uint32_t alloc, std::span<std::byte> out,
                                 const BlockHeader& header) {
  const size_t len = header.payload_length;
  if (direct_io_ && AioAvailable()) {
    const bool bounce = !Aligned(out.data()) || out.size() < alloc;
    std::byte* dst = bounce ? AlignedScratch(alloc) : out.data();
    if (dst == nullptr)
      return Status::ResourceExhausted("disk tier: no memory for a bounce buffer");
    Status st = ReadVerifiedAio(fd_, offset, dst, alloc, header);
    if (st.code() != StatusCode::kUnavailable) {
      if (st.ok() && bounce) std::memcpy(out.data(), dst, len);
      return st;
    }
  }
  STRATA_RETURN_IF_ERROR(Read(offset, alloc, out, len));
  return VerifyPayload(header, out.first(len));
}

Status PayloadFile::ReadCompressed(uint64_t offset, uint32_t alloc, uint32_t stored,
                                   DiskCompression compression, std::span<std::byte> out,
                                   const BlockHeader& header, bool* undecodable) {
  std::byte* buf = AlignedScratch(alloc, kStored);
  if (buf == nullptr)
    return Status::ResourceExhausted("disk tier: no memory for a decompression buffer");
  STRATA_RETURN_IF_ERROR(Read(offset, alloc, std::span<std::byte>(buf, alloc), stored));
  Status st = DecompressPayload(compression, std::span<const std::byte>(buf, stored), out);
  if (!st.ok()) {
    *undecodable = st.IsCorruption();
    return Status::Corruption("block " + header.key.ToHex() + ": " +
                              std::string(DiskCompressionName(compression)) + " record of " +
                              std::to_string(stored) + " bytes: " + std::string(st.message()));
  }
  return VerifyPayload(header, out);
}

Result<std::span<const std::byte>> CompressForDisk(const DiskCompressionOptions& options,
                                                   std::span<const std::byte> payload) {
  const uint64_t raw_alloc = RoundUp(payload.size(), kAlign);
  // Worth keeping only when it saves at least one page on disk.
  if (raw_alloc <= kAlign) return std::span<const std::byte>();
  std::byte* buf = AlignedScratch(raw_alloc, kStored);
  if (buf == nullptr)
    return Status::ResourceExhausted("disk tier: no memory for a compression buffer");
  const size_t n = CompressPayload(options, payload, std::span<std::byte>(buf, raw_alloc - kAlign));
  if (n == 0) return std::span<const std::byte>();
  std::memset(buf + n, 0, RoundUp(n, kAlign) - n);
  return std::span<const std::byte>(buf, n);
}

}  // namespace strata::store::disk
