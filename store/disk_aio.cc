#include "store/disk_aio.h"

#include <linux/aio_abi.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

namespace strata::store::disk {
namespace {

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

class ThreadAio {
 public:
  static constexpr unsigned kDepth = kAioDepth;
  static ThreadAio& Get() {
    thread_local ThreadAio aio;
    return aio;
  }
  bool ok() const { return ok_; }
  aio_context_t ctx() const { return ctx_; }

 private:
  ThreadAio() { ok_ = syscall(SYS_io_setup, kDepth, &ctx_) == 0; }
  ~ThreadAio() {
    if (ok_) syscall(SYS_io_destroy, ctx_);
  }
  aio_context_t ctx_ = 0;
  bool ok_ = false;
};

}  // namespace

bool AioAvailable() { return ThreadAio::Get().ok(); }

Status ReadVerifiedAio(int fd, uint64_t offset, std::byte* dst, uint32_t alloc,
                       const BlockHeader& header) {
  // 512 KiB pieces, up to 4 in flight: a 2 MiB block is one submission of four
  // reads, and the first piece is hashed while the other three are still being
  // read.
  constexpr uint64_t kPiece = kAioPiece;
  if (!ThreadAio::Get().ok())
    return Status::Unavailable("disk tier: no AIO context (io_setup refused)");
  const aio_context_t ctx = ThreadAio::Get().ctx();
  const uint64_t len = header.payload_length;
  const uint32_t pieces = static_cast<uint32_t>((alloc + kPiece - 1) / kPiece);
  struct iocb cbs[kAioDepth];
  int64_t result[kAioDepth];
  uint32_t submitted = 0, hashed = 0, in_flight = 0;
  Status st;
  PayloadChecksumStream sum;
  auto submit = [&]() {
    // A control block is reused only once its piece was hashed (pieces are
    // hashed in order).
    while (st.ok() && submitted < pieces && submitted - hashed < kAioDepth) {
      const uint32_t c = submitted % kAioDepth;
      const uint64_t at = uint64_t{submitted} * kPiece;
      std::memset(&cbs[c], 0, sizeof cbs[c]);
      cbs[c].aio_lio_opcode = IOCB_CMD_PREAD;
      cbs[c].aio_fildes = static_cast<uint32_t>(fd);
      cbs[c].aio_buf = reinterpret_cast<uint64_t>(dst + at);
      cbs[c].aio_nbytes = std::min<uint64_t>(kPiece, alloc - at);
      cbs[c].aio_offset = static_cast<int64_t>(offset + at);
      cbs[c].aio_data = c;
      result[c] = INT64_MIN;  // not landed
      struct iocb* p = &cbs[c];
      const long r = syscall(SYS_io_submit, ctx, 1, &p);
      if (r != 1) {
        if (r < 0 && errno == EINTR) continue;
        // Nothing submitted yet: let the caller fall back to pread. Otherwise a
        // real error.
        st = submitted == 0 ? Status::Unavailable(Errno("disk tier: io_submit"))
                            : Status::IOError(Errno("disk tier: io_submit"));
        return;
      }
      ++submitted;
      ++in_flight;
    }
  };
  submit();
  // Hash pieces in order as they land; keep the queue full. Every submitted
  // read is reaped before returning, error or not: the kernel writes into dst
  // until it completes.
  while (in_flight > 0) {
    struct io_event ev[kAioDepth];
    const long n = syscall(SYS_io_getevents, ctx, 1, static_cast<long>(in_flight), ev, nullptr);
    if (n < 0) {
      if (errno == EINTR) continue;
      // Only bad arguments (a bug) make io_getevents fail. The reads may still
      // land in dst, so keep reaping rather than return while the kernel can
      // write into the caller's buffer.
      if (st.ok()) st = Status::IOError(Errno("disk tier: io_getevents"));
      continue;
    }
    for (long i = 0; i < n; ++i) {
      const uint32_t c = static_cast<uint32_t>(ev[i].data);
      result[c] = ev[i].res;
      --in_flight;
    }
    // Hash every piece that has landed, in order.
    while (st.ok() && hashed < submitted) {
      const uint32_t c = hashed % kAioDepth;
      if (result[c] == INT64_MIN) break;
      const uint64_t at = uint64_t{hashed} * kPiece;  // pieces are hashed in order
      const uint64_t want = std::min<uint64_t>(kPiece, alloc - at);
      if (result[c] < 0) {
        errno = static_cast<int>(-result[c]);
        st = Status::IOError(Errno("disk tier: read"));
        break;
      }
      if (static_cast<uint64_t>(result[c]) < want) {
        // Short read: the rest synchronously (past the end of the file is
        // corruption).
        size_t done = static_cast<size_t>(result[c]);
        while (st.ok() && done < want) {
          const ssize_t r =
              pread(fd, dst + at + done, want - done, static_cast<off_t>(offset + at + done));
          if (r < 0 && errno == EINTR) continue;
          if (r < 0)
            st = Status::IOError(Errno("disk tier: pread"));
          else if (r == 0)
            st = Status::Corruption("disk tier: payload extends past the end of blocks.data");
          else
            done += static_cast<size_t>(r);
        }
        if (!st.ok()) break;
      }
      if (at < len) sum.Update(std::span<const std::byte>(dst + at, std::min(want, len - at)));
      result[c] = INT64_MIN;
      ++hashed;
    }
    submit();
  }
  STRATA_RETURN_IF_ERROR(st);
  if (sum.Digest() != header.payload_checksum)
    return Status::Corruption("block " + header.key.ToHex() + ": payload checksum mismatch");
  return Status::OK();
}

}  // namespace strata::store::disk
