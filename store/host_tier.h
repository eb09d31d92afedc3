// HostTier: the host DRAM tier, one pre-sized shared-memory pool (a memfd) carved into blocks by
// the BlockPool (slot table, striped index, slab allocator, eviction policy).
//
// The pool is a real memfd so the daemon can pass it to engine clients over SCM_RIGHTS and
// register it with UCX once (DESIGN.md): fd(), base(), size() and the offsets of BlockLocation /
// PinnedBlock::offset() are all a client or transport needs. Layout of the memfd:
//
//   [0, payload_offset)              header area: slot i's 64-byte block header at i * 64
//   [payload_offset, size)           slabs: payloads, every one 4 KiB-aligned
//
// payload_offset is 2 MiB-aligned and the mapping is 2 MiB-aligned, so transparent huge pages can
// back it (madvise(MADV_HUGEPAGE); with MFD_HUGETLB when hugetlbfs pages are reserved).
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
  std::byte* base() const { return base_; }
  uint64_t size() const { return size_; }
  uint64_t header_offset() const { return 0; }
  uint64_t payload_offset() const { return payload_offset_; }
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
           PoolMemory memory, std::unique_ptr<EvictionPolicy> policy, int fd, std::byte* base,
           uint64_t size, uint64_t payload_offset, bool hugetlb, void* reservation,
           uint64_t reservation_size);
  // Faults every page in (MADV_POPULATE_WRITE, 64 MiB at a time) until done, stopped or refused,
  // advancing populated_bytes_.
  void PopulateAll();

  int fd_;
  std::byte* base_;
  uint64_t size_;
  uint64_t payload_offset_;
  bool hugetlb_;
  void* reservation_;
  uint64_t reservation_size_;
  std::atomic<bool> stop_populating_{false};
  std::atomic<uint64_t> populated_bytes_{0};
  std::atomic<bool> populating_{false};
  std::thread populator_;
};

}  // namespace strata::store
