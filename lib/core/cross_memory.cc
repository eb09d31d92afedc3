#include "cross_memory.h"

#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <emmintrin.h>
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

Status GatherFromProcess(const ClientProcess& p, std::span<const uint64_t> chunks,
                         const ChunkShape& shape, std::span<ShardOut> shards) {
  const uint64_t chunk = shape.chunk_bytes(), piece = shape.shard_piece_bytes();
  if (chunk == 0 || chunk > kCrossMemoryChunkBytes)
    return Status::InvalidArgument("cross-memory gather: an engine chunk of " +
                                   std::to_string(chunk) + " bytes (at most " +
                                   std::to_string(kCrossMemoryChunkBytes) + ")");
  // Chunks per read: the scratch stays in L2, and the kernel takes at most IOV_MAX iovecs.
  const size_t batch = std::min<uint64_t>({kCrossMemoryChunkBytes / chunk, 1024});
  thread_local std::vector<std::byte> scratch, assembled;  // 16-byte aligned (operator new)
  thread_local std::vector<iovec> remote;
  thread_local std::vector<PayloadChecksumStream> streams;
  thread_local std::vector<GatherWithChecksum> fused;
  if (scratch.size() < batch * chunk) scratch.resize(batch * chunk);
  remote.resize(batch);
  // One pass per byte (GatherWithChecksum: rows loaded from the scratch, streamed to the pool and
  // hashed from the same registers) where every shard allows it; else each head's rows are put
  // together in an L1 piece, hashed there and streamed out from it.
  const uint64_t shard_bytes = chunks.size() * piece;
  bool one_pass = shape.row_bytes % 64 == 0;
  for (const ShardOut& s : shards) one_pass = one_pass && GatherWithChecksum::Fits(s.dst, shard_bytes);
  fused.clear();
  if (one_pass) {
    for (const ShardOut& s : shards) fused.emplace_back(s.dst, shard_bytes);
  } else {
    if (assembled.size() < piece) assembled.resize(piece);
    streams.assign(shards.size(), PayloadChecksumStream());
  }
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
    for (size_t i = 0; i < n; ++i) {
      const std::byte* c = scratch.data() + i * chunk;
      if (one_pass) {
        for (size_t s = 0; s < shards.size(); ++s)
          fused[s].AppendRows(c + uint64_t{shards[s].head} * shape.row_bytes, shape.rows,
                              uint64_t{shape.heads} * shape.row_bytes, shape.row_bytes);
        continue;
      }
      for (size_t s = 0; s < shards.size(); ++s) {
        // The head's rows are put together in `assembled` (L1), hashed there and streamed to
        // the pool from it: the checksum is of the very bytes written, from daemon memory.
        std::byte* out = shards[s].dst + (first + i) * piece;
        const std::byte* row = c + uint64_t{shards[s].head} * shape.row_bytes;
        const std::byte* whole = row;
        if (shape.heads != 1) {
          for (uint32_t r = 0; r < shape.rows; ++r)
            std::memcpy(assembled.data() + r * shape.row_bytes,
                        row + uint64_t{r} * shape.heads * shape.row_bytes, shape.row_bytes);
          whole = assembled.data();
        }
        streams[s].Update(std::span<const std::byte>(whole, piece));
        StreamOut(out, whole, piece);
      }
    }
  }
#if defined(__x86_64__)
  _mm_sfence();  // the streamed lines are in memory before the commit is answered
#endif
  if (!StillThere(p.pidfd))
    return ReadError(ESRCH, p.pid, chunks.empty() ? 0 : chunks[0], chunk);
  for (size_t s = 0; s < shards.size(); ++s)
    shards[s].checksum = one_pass ? fused[s].Finish() : streams[s].Digest();
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
