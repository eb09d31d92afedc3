// HostTier: the host DRAM tier, one pre-sized shared-memory pool carved into blocks by the
// BlockPool (slot table, striped index, slab allocator, eviction policy).
//
// The pool is one contiguous address range of this process made of one memfd per slab, so the
// daemon can hand engine clients the slabs of the tenants they may use, and only those, over
// SCM_RIGHTS (docs/data-plane.md, "Tenants"), and register the range with UCX. The memfds hold
// payloads only (every payload 4 KiB-aligned, offsets from base() as BlockLocation /
// PinnedBlock::offset()); the 64-byte block headers live in a private anonymous mapping of this
// process, so no client can read or forge them. After the tier's own writable mapping of a slab
// is made, its memfd is sealed (F_SEAL_FUTURE_WRITE, SHRINK, GROW, SEAL) and set to mode 0400,
// and the tier keeps only a read-only reopen of it: nobody can map a slab writable again.
//
// A slab that is lent to another tenant than the one whose bytes it held gets a fresh memfd
// first, mapped over the old one at the same address (its generation counts up): a client that
// mapped the old memfd keeps seeing the old tenant's stale bytes, never the new tenant's. The
// renewal listener then re-registers the slab where the range is registered (UCX, CUDA).
//
// The range is 2 MiB-aligned, so transparent huge pages can back it (madvise(MADV_HUGEPAGE);
// with MFD_HUGETLB when hugetlbfs pages are reserved). One descriptor per slab stays open: Open
// raises the soft open-files limit to the hard one when the slabs need it.
//
// Every published block is also entered in its tenant's load index segment (store/load_index.h),
// which clients of that tenant map read-only to load without a round trip; the entry is removed,
// its seqlock bumped, before the block's payload can be freed (docs/data-plane.md, "Loads without
// a round trip").
//
// Thread-safety: as BlockPool (all methods thread-safe). Ownership: the tier owns the memfds and
// the mapping; DupSlab hands out a descriptor the caller owns.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "store/block_pool.h"
#include "store/load_index.h"

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

  // What a client receives for one slab: a read-only descriptor of its memfd (owned by the
  // caller), the slab's generation (counts up each time the slab gets a fresh memfd) and the
  // tenant whose bytes the memfd holds.
  struct SlabDescriptor {
    int fd = -1;
    uint32_t generation = 0;
    uint16_t tenant = 0;
  };
  // InvalidArgument for a slab out of range; IOError when dup fails.
  Result<SlabDescriptor> DupSlab(uint32_t slab) const;
  // The tier's own read-only descriptor of slab `slab`'s memfd (not a duplicate: never close
  // it). It stays open and names this slab while a block of the slab is pinned: a slab that
  // holds a block is never lent, so never renewed. A same-host peer daemon takes a duplicate of
  // it with pidfd_getfd (docs/cluster.md, "Same-host pulls from the holder's pool mapping").
  int SlabFd(uint32_t slab) const { return slabs_[slab].fd.load(std::memory_order_acquire); }
  uint32_t SlabGeneration(uint32_t slab) const {
    return slabs_[slab].generation.load(std::memory_order_acquire);
  }
  // Slabs that got a fresh memfd since Open.
  uint64_t slabs_renewed() const { return slabs_renewed_.load(std::memory_order_relaxed); }
  // Listeners run after slab `slab` got a fresh memfd at [base, base + bytes) (same address),
  // before any block is written there, one renewal at a time, in the order they were added, on
  // the thread whose allocation lent the slab (a put's, or the cluster transport's progress
  // thread for a pulled block). Whoever registered the range with a device or a NIC registers
  // the slab again there (the GPU's cudaHostRegister, UCX's ucp_mem_map). Add returns an id for
  // Remove; once Remove returns, the listener no longer runs. REQUIRES: added before the tier
  // serves puts of a second tenant (or before the range is registered).
  using SlabRenewedListener = std::function<void(uint32_t slab, std::byte* base, uint64_t bytes)>;
  uint64_t AddSlabRenewedListener(SlabRenewedListener listener);
  void RemoveSlabRenewedListener(uint64_t id);
  // The load index: clients map a tenant's segment read-only (LoadIndex::DupSegment).
  const LoadIndex& load_index() const { return *load_index_; }
  std::byte* base() const { return base_; }
  uint64_t size() const { return size_; }
  // True when MFD_HUGETLB pages back the pool (else 4 KiB pages, THP where the kernel allows).
  bool hugetlb() const { return hugetlb_; }
  // The pages backing the pool, as far as the host's settings tell (Stats `pool_pages`):
  // "hugetlb" (MFD_HUGETLB, 2 MiB), "transparent" (shmem THP `always`, `within_size`, `advise`
  // or `force`: 2 MiB where the kernel finds them), "4KiB" (shmem THP `never` or `deny`), read
  // when the tier opened.
  const char* page_kind() const { return page_kind_; }
  // Blocks until the background population is over (at once for kAtOpen / kOnDemand). True when
  // every page was populated; false when the kernel has no MADV_POPULATE_WRITE (Linux < 5.14)
  // or memory ran short (the pages then fault in at first use, as with kOnDemand).
  bool WaitPopulated();
  // Bytes of the memfd the population has faulted in so far (size() once done; 0 for kOnDemand).
  uint64_t populated_bytes() const { return populated_bytes_.load(std::memory_order_relaxed); }
  // True while the background population runs.
  bool populating() const { return populating_.load(std::memory_order_relaxed); }

 private:
  struct Slab {
    std::atomic<int> fd{-1};  // read-only reopen of the slab's memfd; swapped under renew_mu_
    std::atomic<uint32_t> generation{0};
  };

  HostTier(const HostTierOptions& options, uint32_t num_slabs, uint32_t max_blocks,
           PoolMemory memory, std::unique_ptr<EvictionPolicy> policy,
           std::unique_ptr<Slab[]> slabs, std::byte* base, uint64_t size, bool hugetlb,
           void* reservation, uint64_t reservation_size, void* headers, uint64_t header_bytes);
  void OnPublished(uint32_t slot, const BlockHeader& header, uint64_t offset, int lane) override;
  void OnUnpublished(uint32_t slot) override;
  // Faults every page in (MADV_POPULATE_WRITE, 64 MiB at a time) until done, stopped or refused,
  // advancing populated_bytes_.
  void PopulateAll();
  // The lend hook: gives `slab` a fresh memfd before it holds `tenant`'s bytes. False (logged)
  // when the memfd cannot be made.
  bool RenewSlab(uint32_t slab, uint16_t tenant);

  const std::string name_;
  mutable std::mutex renew_mu_;  // one renewal at a time; DupSlab reads a consistent fd
  std::unique_ptr<Slab[]> slabs_;
  std::vector<std::pair<uint64_t, SlabRenewedListener>> renewed_listeners_;  // GUARDED_BY(renew_mu_)
  uint64_t next_listener_ = 1;                                                // GUARDED_BY(renew_mu_)
  std::atomic<uint64_t> slabs_renewed_{0};
  std::byte* base_;
  uint64_t size_;
  bool hugetlb_;
  const char* page_kind_ = "4KiB";
  void* reservation_;
  uint64_t reservation_size_;
  void* headers_;  // max_blocks x 64-byte headers, private to this process
  uint64_t header_bytes_;
  std::unique_ptr<LoadIndex> load_index_;
  std::atomic<bool> stop_populating_{false};
  std::atomic<uint64_t> populated_bytes_{0};
  std::atomic<bool> populating_{false};
  std::thread populator_;
};

}  // namespace strata::store
