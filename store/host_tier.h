// HostTier: the host DRAM tier, one pre-sized shared-memory pool (a memfd) carved into blocks by
// the BlockPool (slot table, striped index, slab allocator, eviction policy).
//
// The pool is a real memfd so the daemon can pass it to engine clients over SCM_RIGHTS and
// register it with UCX once (DESIGN.md). The memfd holds payloads only (slabs, every payload
// 4 KiB-aligned, offsets as BlockLocation / PinnedBlock::offset()); the 64-byte block headers
// live in a private anonymous mapping of this process, so no client can read or forge them.
// After the tier's own writable mapping is made, the memfd is sealed (F_SEAL_FUTURE_WRITE,
// SHRINK, GROW, SEAL) and set to mode 0400: the only descriptor handed out, read_only_fd(), can
// be mapped for reading only, and nobody can map the pool writable again (docs/data-plane.md).
//
// The mapping is 2 MiB-aligned, so transparent huge pages can back it (madvise(MADV_HUGEPAGE);
// with MFD_HUGETLB when hugetlbfs pages are reserved).
//
// Thread-safety: as BlockPool (all methods thread-safe). Ownership: the tier owns the memfd and
// the mapping; fd() stays valid for the tier's lifetime (dup it to hand it out).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "store/block_pool.h"

namespace strata::store {

struct HostTierOptions {
  // Payload bytes of the pool (rounded up to whole slabs). Default: 1 GiB.
  uint64_t capacity_bytes = uint64_t{1} << 30;
  // Slab size, slot count, policy, eviction sink, verification (block_pool.h).
  BlockPoolOptions pool;
  // Ask for MFD_HUGETLB pages first (needs reserved hugetlbfs pages; falls back silently).
  // Default: true.
  bool hugetlb = true;
  // How the pool's pages get their memory.
  //  - kBackground (default): a thread of the tier faults them in, 64 MiB at a time
  //    (MADV_POPULATE_WRITE), while the tier already serves; a put that lands on a page the thread
  //    has not reached yet takes the fault itself. A daemon with a 16 GiB pool starts at once
  //    instead of after the kernel has zeroed 16 GiB.
  //  - kAtOpen: Open returns once every page is in (MAP_POPULATE): the put path never faults
  //    (benchmarks).
  //  - kOnDemand: pages fault in at first use.
  enum class Populate : uint8_t { kBackground, kAtOpen, kOnDemand };
  Populate populate = Populate::kBackground;
  // memfd name, visible in /proc/PID/fd. Default: "strata-host-pool".
  std::string name = "strata-host-pool";
};

class HostTier final : public BlockPool {
 public:
  // Creates the memfd, maps it and builds the pool. InvalidArgument for bad options; IOError or
  // NoSpace when the memfd cannot be created, sized or mapped.
  static Result<std::unique_ptr<HostTier>> Open(const HostTierOptions& options);
  ~HostTier() override;

  int fd() const { return fd_; }
  // A read-only descriptor of the memfd: what clients receive (dup it to hand it out).
  int read_only_fd() const { return read_only_fd_; }
  std::byte* base() const { return base_; }
  uint64_t size() const { return size_; }
  // True when MFD_HUGETLB pages back the pool (else 4 KiB pages, THP where the kernel allows).
  bool hugetlb() const { return hugetlb_; }
  // Blocks until the background population is over (at once for kAtOpen / kOnDemand). True when
  // every page was populated; false when the kernel has no MADV_POPULATE_WRITE (Linux < 5.14)
  // or memory ran short (the pages then fault in at first use, as with kOnDemand).
  bool WaitPopulated();
  // Bytes of the memfd the population has faulted in so far (size() once done; 0 for kOnDemand).
  uint64_t populated_bytes() const { return populated_bytes_.load(std::memory_order_relaxed); }
  // True while the background population runs.
  bool populating() const { return populating_.load(std::memory_order_relaxed); }

 private:
  HostTier(const HostTierOptions& options, uint32_t num_slabs, uint32_t max_blocks,
           PoolMemory memory, std::unique_ptr<EvictionPolicy> policy, int fd, int read_only_fd,
           std::byte* base, uint64_t size, bool hugetlb, void* reservation,
           uint64_t reservation_size, void* headers, uint64_t header_bytes);
  // Faults every page in (MADV_POPULATE_WRITE, 64 MiB at a time) until done, stopped or refused,
  // advancing populated_bytes_.
  void PopulateAll();

  int fd_;
  int read_only_fd_;
  std::byte* base_;
  uint64_t size_;
  bool hugetlb_;
  void* reservation_;
  uint64_t reservation_size_;
  void* headers_;  // max_blocks x 64-byte headers, private to this process
  uint64_t header_bytes_;
  std::atomic<bool> stop_populating_{false};
  std::atomic<uint64_t> populated_bytes_{0};
  std::atomic<bool> populating_{false};
  std::thread populator_;
};

}  // namespace strata::store
