// Cross-memory reads: the daemon copies a payload out of a connected client's memory with
// process_vm_readv (docs/data-plane.md, "Cross-memory store"), straight into the pool, and
// hashes it from there.
//
// Why chunks: the kernel copies each chunk into the pool and the checksum is then computed from
// the bytes just written, while they are still in this core's L2 cache, so a stored byte crosses
// DRAM twice (client read, pool write) as in a memcpy. The checksum is of the bytes in the pool,
// which the client cannot write: a client changing its buffer during the copy changes only what
// is both stored and hashed.
//
// Thread-safety: the functions keep no state; any thread may call them.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <span>

#include "strata/result.h"
#include "strata/status.h"

namespace strata {

// Bytes per process_vm_readv of a cross-memory copy: they stay in L2 until hashed.
inline constexpr uint64_t kCrossMemoryChunkBytes = uint64_t{256} << 10;

// A process to read from: its pid, and a pidfd of it taken when it connected (SO_PEERPIDFD). A
// pid number can be reused once its process is gone; the pidfd cannot, so every read is checked
// against it afterwards: the bytes came from the process that connected, never from a process
// that got its pid later.
struct ClientProcess {
  pid_t pid = 0;
  int pidfd = -1;
};

// The connected peer of Unix socket `socket_fd` as a ClientProcess (the caller owns the pidfd);
// NotSupported where the kernel has no SO_PEERPIDFD (Linux < 6.5).
Result<ClientProcess> PeerProcess(int socket_fd, pid_t pid);

// Copies `length` bytes at `address` of process `p` into `dst` and returns the XXH3-64
// (PayloadChecksum) of the bytes written. InvalidArgument when the range is not readable in that
// process (EFAULT: a bad address, or one unmapped mid-copy) or a read came back short;
// PermissionDenied when the kernel refuses the access (EPERM); NotFound when the process is gone.
// On error `dst` holds an undefined prefix of the payload.
Result<uint64_t> CopyFromProcessWithChecksum(const ClientProcess& p, uint64_t address,
                                             uint64_t length, std::byte* dst);

// The shape of a paged gather: an engine chunk is [rows][heads][row_bytes] at one address of
// the client; a head shard is, for each of its block's chunks in order, the `rows` rows of its
// head (docs/data-plane.md, "Paged KV: head shards").
struct ChunkShape {
  uint32_t rows = 0;
  uint32_t heads = 0;
  uint64_t row_bytes = 0;
  uint64_t chunk_bytes() const { return uint64_t{rows} * heads * row_bytes; }
  uint64_t shard_piece_bytes() const { return uint64_t{rows} * row_bytes; }
};

// One shard to gather: the head it takes from each chunk and where its payload goes.
struct ShardOut {
  uint32_t head = 0;
  std::byte* dst = nullptr;  // chunks.size() * shape.shard_piece_bytes() bytes
  uint64_t checksum = 0;     // set on success: PayloadChecksum of the bytes written at dst
};

// Reads the client's chunks (addresses `chunks`, each shape.chunk_bytes() long) in batches of one
// process_vm_readv into a thread-local scratch that stays in L2, then gathers each shard out of
// it. Where rows are whole 64-byte lines and the fused copy takes every `dst`
// (GatherWithChecksum::Fits), in one pass: each row loaded once, streamed to `dst` with
// non-temporal stores and hashed from the same registers. Otherwise each shard's rows of a chunk
// are put together in a thread-local piece (L1), hashed there and streamed out from it. Either
// way the stores are fenced before returning and the checksum is of the very bytes written.
// Errors as CopyFromProcessWithChecksum.
// REQUIRES: every shards[i].head < shape.heads.
Status GatherFromProcess(const ClientProcess& p, std::span<const uint64_t> chunks,
                         const ChunkShape& shape, std::span<ShardOut> shards);

// As GatherFromProcess, from chunks this process can read itself: `chunks` are addresses in a
// read-only mapping of the daemon's (a KV cache the client shared, daemon/shared_kv.h), gathered
// straight from there, no system call. The source may change meanwhile (the engine writes its
// cache): each row is read once, and what is hashed is what was written.
// REQUIRES: every chunk readable for shape.chunk_bytes() bytes; every shards[i].head < shape.heads.
Status GatherFromMapping(std::span<const uint64_t> chunks, const ChunkShape& shape,
                         std::span<ShardOut> shards);

// Reads `length` (<= 4096) bytes at `address` of process `p` into a scratch buffer: OK when
// cross-memory reads of that process work, the error of CopyFromProcessWithChecksum otherwise.
Status ProbeProcessMemory(const ClientProcess& p, uint64_t address, uint64_t length);

}  // namespace strata
