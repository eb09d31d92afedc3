// PeerPoolMapping: a same-host puller's read-only view of a holder daemon's host pool
// (docs/cluster.md, "Same-host pulls from the holder's pool mapping").
//
// A holder on the same host (same boot id, network and pid namespace, uid: wire::SameHost) tells
// the puller its pid in the session handshake and, with each mapped pull, the descriptor number
// and generation of the slab that holds each block. The puller opens the holder with
// pidfd_open(2) once per session and takes a duplicate of a slab's memfd with pidfd_getfd(2)
// (Linux >= 5.6; it needs the same ptrace access as the cma transport's process_vm_readv), maps
// it read-only and shared, closes the duplicate and keeps the mapping for the session: one
// mapping per slab and generation, never per pull. A short-lived thread fills each new
// mapping's page table in the background (MADV_POPULATE_READ), so that copies seldom fault. A slab whose generation moved (renewed for
// another tenant: a fresh memfd) is taken and mapped again; the old mapping stays valid for
// whoever still copies from it (shared ownership) and goes when the last user drops it.
//
// Nothing read through the mapping is trusted: the puller copies a block out with
// CopyWithChecksum and compares the sum with the block header's checksum, so a slot the holder
// reused meanwhile is a Corruption, never data.
//
// Thread-safety: Open and the static functions are thread-safe; Locate is thread-safe (one mutex
// around the slab table; the getfd and mmap of a new slab run under it). Ownership: the object
// owns the pidfd and its mappings.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "lib/core/page_populate.h"
#include "strata/result.h"
#include "strata/status.h"
#include "transport/wire/messages.h"

namespace strata::transport {

// This process's place on its host: boot id, network and pid namespace, effective uid, pid.
// Read once (the first call) and cached.
const wire::SameHost& LocalSameHost();

// Why a holder that says `theirs` cannot be mapped by this process: "" when it can be tried
// (every field but the pid equal, the pid not ours), else the first difference in words.
std::string SameHostMismatch(const wire::SameHost& theirs);

class PeerPoolMapping {
 public:
  // Opens the holder process `pid` (pidfd_open) and checks that this process may take its
  // descriptors: a pidfd_getfd of a descriptor number no process has open must fail with
  // EBADF, not EPERM (Yama's ptrace_scope, another uid, no CAP_SYS_PTRACE). NotSupported when
  // the kernel has no pidfd_getfd, PermissionDenied when it is refused, Unavailable when the
  // process is gone.
  static Result<std::shared_ptr<PeerPoolMapping>> Open(uint32_t pid);
  ~PeerPoolMapping();
  PeerPoolMapping(const PeerPoolMapping&) = delete;
  PeerPoolMapping& operator=(const PeerPoolMapping&) = delete;

  // One slab of the holder's pool, mapped read-only (kept while someone copies from it).
  struct Slab {
    const std::byte* base = nullptr;
    size_t bytes = 0;
    uint32_t generation = 0;
    BackgroundPopulate populate;  // filling the page table; stopped before the unmap
    ~Slab();
  };
  // Where `block` lies in this process: its payload's first byte, and the slab mapping that
  // keeps it valid (hold it until the copy is done). Maps the slab on first use and again when
  // its generation moved. Errors: the descriptor cannot be taken (the holder died, the number
  // names another file now), it is not a regular file of at least offset + length bytes, the
  // mapping fails. Three failures in a row (a generation mismatch that persists) turn the
  // mapping off for good (off()).
  struct Located {
    std::shared_ptr<const Slab> slab;
    const std::byte* payload = nullptr;
  };
  Result<Located> Locate(const wire::MappedBlock& block);

  // True once Locate failed kMaxFailures times in a row: the session's pulls go back to the
  // bytes-on-the-wire path.
  bool off() const { return off_.load(std::memory_order_relaxed); }
  // True exactly once, for the first caller after off() became true (to log and count it once).
  bool TakeOffNotice() { return off() && !off_noticed_.exchange(true); }
  uint64_t slabs_mapped() const { return slabs_mapped_.load(std::memory_order_relaxed); }

  static constexpr int kMaxFailures = 3;

 private:
  explicit PeerPoolMapping(int pidfd) : pidfd_(pidfd) {}
  Result<std::shared_ptr<const Slab>> MapSlab(const wire::MappedBlock& block);

  const int pidfd_;
  std::mutex mu_;
  std::unordered_map<uint32_t, std::shared_ptr<const Slab>> slabs_;  // GUARDED_BY(mu_)
  int failures_ = 0;                                                 // GUARDED_BY(mu_)
  std::atomic<bool> off_{false};
  std::atomic<bool> off_noticed_{false};
  std::atomic<uint64_t> slabs_mapped_{0};
};

}  // namespace strata::transport
