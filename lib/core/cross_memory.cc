#include "cross_memory.h"

#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <emmintrin.h>
#include <xmmintrin.h>
#endif

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "checksum_copy.h"
#include "strata/block_format.h"

namespace strata {
namespace {

Status ReadError(int err, pid_t pid, uint64_t address, uint64_t length) {
  char at[24];
  std::snprintf(at, sizeof(at), "0x%llx", static_cast<unsigned long long>(address));
  const std::string what = "reading " + std::to_string(length) + " bytes at " + at +
                           " of client process " + std::to_string(pid);
  switch (err) {
    case 0: return Status::InvalidArgument(what + ": the read came back short (unmapped?)");
    case EFAULT: return Status::InvalidArgument(what + ": not mapped in the client (EFAULT)");
    case EPERM: return Status::PermissionDenied(what + ": refused by the kernel (EPERM)");
    case ESRCH: return Status::NotFound(what + ": the process is gone (ESRCH)");
    default: return Status::IOError(what + ": " + std::strerror(err));
  }
}

// One process_vm_readv of the whole range; false with errno (0: short read) otherwise.
bool ReadWhole(pid_t pid, uint64_t address, uint64_t length, std::byte* dst, int* err) {
  iovec local{dst, length};
  iovec remote{reinterpret_cast<void*>(address), length};
  const ssize_t n = ::process_vm_readv(pid, &local, 1, &remote, 1, 0);
  if (n == static_cast<ssize_t>(length)) return true;
  *err = n < 0 ? errno : 0;
  return false;
}

// Writes `n` bytes from `src` (daemon scratch, just written) to `dst` (the pool) with
// non-temporal stores where both are 16-byte aligned and n is a multiple of 64: a plain store
// first reads every pool line it writes (read for ownership), a third pass over DRAM.
void StreamOut(std::byte* dst, const std::byte* src, uint64_t n) {
#if defined(__x86_64__)
  if (((reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src)) & 15) == 0 &&
      n % 64 == 0) {
    for (uint64_t i = 0; i < n; i += 64) {
      const auto* s = reinterpret_cast<const __m128i*>(src + i);
      auto* d = reinterpret_cast<__m128i*>(dst + i);
      const __m128i a = _mm_load_si128(s), b = _mm_load_si128(s + 1), c = _mm_load_si128(s + 2),
                    e = _mm_load_si128(s + 3);
      _mm_stream_si128(d, a);
      _mm_stream_si128(d + 1, b);
      _mm_stream_si128(d + 2, c);
      _mm_stream_si128(d + 3, e);
    }
    return;
  }
#endif
  std::memcpy(dst, src, n);
}

// Whether the process behind `pidfd` still exists (running or not yet reaped): its pid has not
// been handed to another process.
bool StillThere(int pidfd) {
  return ::syscall(SYS_pidfd_send_signal, pidfd, 0, nullptr, 0) == 0;
}

}  // namespace

Result<ClientProcess> PeerProcess(int socket_fd, pid_t pid) {
#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif
  int pidfd = -1;
  socklen_t len = sizeof(pidfd);
  if (::getsockopt(socket_fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) != 0 || pidfd < 0)
    return Status::NotSupported(std::string("SO_PEERPIDFD: ") + std::strerror(errno));
  return ClientProcess{pid, pidfd};
}

Result<uint64_t> CopyFromProcessWithChecksum(const ClientProcess& p, uint64_t address,
                                             uint64_t length, std::byte* dst) {
  const pid_t pid = p.pid;
  if (address + length < address)
    return Status::InvalidArgument("cross-memory read: address range wraps around");
  PayloadChecksumStream checksum;
  for (uint64_t done = 0; done < length;) {
    const uint64_t n = std::min(kCrossMemoryChunkBytes, length - done);
    int err = 0;
    if (!ReadWhole(pid, address + done, n, dst + done, &err))
      return ReadError(err, pid, address + done, n);
    checksum.Update(std::span<const std::byte>(dst + done, n));  // from cache, just written
    done += n;
  }
  if (!StillThere(p.pidfd)) return ReadError(ESRCH, pid, address, length);
  return checksum.Digest();
}

namespace {

// The shards of one gather, chunk after chunk: in one pass per byte where every shard allows it
// (GatherWithChecksum: rows loaded once, streamed to the pool and hashed from the same
// registers), else each head's rows put together in an L1 piece, hashed there and streamed out
// from it. Either way the checksum is of the very bytes written, read once from the source: a
// source rewritten meanwhile changes only what is both stored and hashed.
class ShardGather {
 public:
  ShardGather(size_t chunks, const ChunkShape& shape, std::span<ShardOut> shards)
      : shape_(shape), shards_(shards), piece_(shape.shard_piece_bytes()) {
    const uint64_t shard_bytes = chunks * piece_;
    one_pass_ = shape.row_bytes % 64 == 0;
    for (const ShardOut& s : shards)
      one_pass_ = one_pass_ && GatherWithChecksum::Fits(s.dst, shard_bytes);
    fused_.clear();
    if (one_pass_) {
      for (const ShardOut& s : shards) fused_.emplace_back(s.dst, shard_bytes);
    } else {
      if (assembled_.size() < piece_) assembled_.resize(piece_);
      streams_.assign(shards.size(), PayloadChecksumStream());
    }
  }

  // Chunk `index` of the block, at `c` (chunk_bytes() readable bytes).
  void Add(const std::byte* c, size_t index) {
    if (one_pass_) {
      for (size_t s = 0; s < shards_.size(); ++s)
        fused_[s].AppendRows(c + uint64_t{shards_[s].head} * shape_.row_bytes, shape_.rows,
                             uint64_t{shape_.heads} * shape_.row_bytes, shape_.row_bytes);
      return;
    }
    for (size_t s = 0; s < shards_.size(); ++s) {
      std::byte* out = shards_[s].dst + index * piece_;
      const std::byte* row = c + uint64_t{shards_[s].head} * shape_.row_bytes;
      const std::byte* whole = row;
      if (shape_.heads != 1) {
        for (uint32_t r = 0; r < shape_.rows; ++r)
          std::memcpy(assembled_.data() + r * shape_.row_bytes,
                      row + uint64_t{r} * shape_.heads * shape_.row_bytes, shape_.row_bytes);
        whole = assembled_.data();
      }
      streams_[s].Update(std::span<const std::byte>(whole, piece_));
      StreamOut(out, whole, piece_);
    }
  }

  // Fences the streamed stores and sets each shard's checksum.
  void Finish() {
#if defined(__x86_64__)
    _mm_sfence();  // the streamed lines are in memory before the commit is answered
#endif
    for (size_t s = 0; s < shards_.size(); ++s)
      shards_[s].checksum = one_pass_ ? fused_[s].Finish() : streams_[s].Digest();
  }

 private:
  const ChunkShape shape_;
  std::span<ShardOut> shards_;
  const uint64_t piece_;
  bool one_pass_ = false;
  static thread_local std::vector<std::byte> assembled_;  // 16-byte aligned (operator new)
  static thread_local std::vector<PayloadChecksumStream> streams_;
  static thread_local std::vector<GatherWithChecksum> fused_;
};
thread_local std::vector<std::byte> ShardGather::assembled_;
thread_local std::vector<PayloadChecksumStream> ShardGather::streams_;
thread_local std::vector<GatherWithChecksum> ShardGather::fused_;

Status CheckChunkShape(const ChunkShape& shape, const char* what) {
  const uint64_t chunk = shape.chunk_bytes();
  if (chunk == 0 || chunk > kCrossMemoryChunkBytes)
    return Status::InvalidArgument(std::string(what) + ": an engine chunk of " +
                                   std::to_string(chunk) + " bytes (at most " +
                                   std::to_string(kCrossMemoryChunkBytes) + ")");
  return Status::OK();
}

}  // namespace

Status GatherFromProcess(const ClientProcess& p, std::span<const uint64_t> chunks,
                         const ChunkShape& shape, std::span<ShardOut> shards) {
  STRATA_RETURN_IF_ERROR(CheckChunkShape(shape, "cross-memory gather"));
  const uint64_t chunk = shape.chunk_bytes();
  // Chunks per read: the scratch stays in L2, and the kernel takes at most IOV_MAX iovecs.
  const size_t batch = std::min<uint64_t>({kCrossMemoryChunkBytes / chunk, 1024});
  thread_local std::vector<std::byte> scratch;  // 16-byte aligned (operator new)
  thread_local std::vector<iovec> remote;
  if (scratch.size() < batch * chunk) scratch.resize(batch * chunk);
  remote.resize(batch);
  ShardGather gather(chunks.size(), shape, shards);
  for (size_t first = 0; first < chunks.size(); first += batch) {
    const size_t n = std::min(batch, chunks.size() - first);
    for (size_t i = 0; i < n; ++i) {
      if (chunks[first + i] + chunk < chunks[first + i])
        return Status::InvalidArgument("cross-memory gather: address range wraps around");
      remote[i] = {reinterpret_cast<void*>(chunks[first + i]), chunk};
    }
    iovec local{scratch.data(), n * chunk};
    const ssize_t got = ::process_vm_readv(p.pid, &local, 1, remote.data(), n, 0);
    if (got != static_cast<ssize_t>(n * chunk))
      return ReadError(got < 0 ? errno : 0, p.pid, chunks[first], n * chunk);
    for (size_t i = 0; i < n; ++i) gather.Add(scratch.data() + i * chunk, first + i);
  }
  if (!StillThere(p.pidfd))
    return ReadError(ESRCH, p.pid, chunks.empty() ? 0 : chunks[0], chunk);
  gather.Finish();
  return Status::OK();
}

Status GatherFromMapping(std::span<const uint64_t> chunks, const ChunkShape& shape,
                         std::span<ShardOut> shards) {
  STRATA_RETURN_IF_ERROR(CheckChunkShape(shape, "mapped gather"));
  const uint64_t chunk = shape.chunk_bytes();
  ShardGather gather(chunks.size(), shape, shards);
  for (size_t i = 0; i < chunks.size(); ++i) {
    const auto* c = reinterpret_cast<const std::byte*>(chunks[i]);
#if defined(__x86_64__)
    // The next chunk lies elsewhere (a random engine page): ask for it while this one is
    // gathered, so that the rows of each head come from cache.
    if (i + 1 < chunks.size()) {
      const auto* next = reinterpret_cast<const char*>(chunks[i + 1]);
      for (uint64_t at = 0; at < chunk; at += 64) _mm_prefetch(next + at, _MM_HINT_T1);
    }
#endif
    gather.Add(c, i);
  }
  gather.Finish();
  return Status::OK();
}

Status ProbeProcessMemory(const ClientProcess& p, uint64_t address, uint64_t length) {
  std::byte scratch[4096];
  if (length > sizeof(scratch)) return Status::InvalidArgument("cross-memory probe too long");
  int err = 0;
  if (!ReadWhole(p.pid, address, length, scratch, &err))
    return ReadError(err, p.pid, address, length);
  if (!StillThere(p.pidfd)) return ReadError(ESRCH, p.pid, address, length);
  return Status::OK();
}

}  // namespace strata
