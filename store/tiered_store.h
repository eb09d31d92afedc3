// TieredStore: the local tier hierarchy (DESIGN.md "Tiers"): an optional device tier, the host
// tier (memfd pool) and an optional disk tier, behind one put/get/lookup/prefetch/pin/erase API.
//
//  - Put lands in host. With WritePolicy::kWriteBack (default) a block reaches disk when host
//    evicts it (every victim by default; with `disk_admission_min_frequency` N > 1, only a key
//    the frequency sketch has seen N times or a shared prefix, one with cached children). The write is asynchronous (DemotionQueue): the evicting put
//    copies the block into a staging ring and goes on; a staged block stays readable (Get,
//    Lookup as disk, Prefetch). With kWriteThrough every put is also written to disk at once.
//  - The device tier (GPU memory, device_tier.h) holds copies of host blocks that were read:
//    CopyToDevice queues them and the device thread copies them in batches (one synchronisation
//    per batch). It survives host evictions, so a block host dropped can come back from the GPU
//    (PromoteFromDevice: one batch device -> host, verified against the checksum on arrival)
//    instead of from disk or a peer. Device evictions drop the copy. The host tier stays the tier
//    that is served (clients and peers read the host pool; no one else can map GPU memory).
//  - Get looks in host, device, then disk; a disk hit is verified (checksum) and promoted to host.
//  - Prefetch(keys) brings disk blocks to host on background threads; the ticket reports when.
//  - Lookup(chain) returns the longest prefix of the chain present in any local tier and, for
//    each of its blocks, the tier a read is served from: host, else device, else disk.
//
// Copies of KV bytes: Put 1 (caller -> pool); Get from host 1 (pool -> caller), or 0 with
// host().Acquire(); write-back 2 (pool -> staging ring -> disk, O_DIRECT); Get from disk 2 (disk ->
// caller, caller -> pool for the promotion); prefetch 2 (disk -> staging buffer -> pool); copy to
// device 1 (host pool -> GPU, DMA); promotion from device 1 (GPU -> host pool, DMA).
//
// Thread-safety: all methods are thread-safe. Ownership: the store owns its tiers, its prefetch
// threads and its device thread (joined by the destructor, which abandons queued prefetches and
// device copies).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string_view>
#include <thread>
#include <vector>

#include "store/access_stats.h"
#include "store/block_tags.h"
#include "store/demotion_queue.h"
#include "store/disk_tier.h"
#include "store/disk_admission.h"
#include "store/host_tier.h"
#include "store/thread_annotations.h"
#include "store/tier.h"
#include "strata/block_format.h"

namespace strata::store {

enum class WritePolicy : uint8_t {
  kWriteBack = 0,     // disk is written when host evicts (admission-filtered)
  kWriteThrough = 1,  // disk is written at put time as well
};

struct TieredStoreOptions {
  HostTierOptions host;
  // The disk tier; none for a host-only store. Default: none.
  std::optional<DiskTierOptions> disk;
  // Default: kWriteBack.
  WritePolicy write_policy = WritePolicy::kWriteBack;
  // Write-back admission: sketch count a key needs before host eviction writes it to disk (shared
  // prefixes are always admitted). 0 or 1 admits everything. Default: 0 (every victim): the
  // seen-twice filter (2) lost hits on 105 of 117 replayed hierarchies, up to half of them on
  // disk (issue 17, ninth pass: docs/store.md "Hierarchy"); it saves disk writes (a third fewer
  // demotions), the trade to make where the SSD's endurance matters more than its hits.
  uint32_t disk_admission_min_frequency = 0;
  // Write-back staging (demotion_queue.h): a host eviction that demotes a block copies it into a
  // ring of this many bytes and a writer thread writes it to disk, so an evicting put never waits
  // for the disk; when the ring is full the block is dropped (StoreStats::demotions_dropped).
  // 0 writes synchronously on the evicting thread, under the pool's eviction lock (compared in
  // docs/benchmarks.md, "Demotion"). Default: 64 MiB.
  uint64_t demotion_queue_bytes = uint64_t{64} << 20;
  // Write-back back-pressure: a put that is about to evict (no free slot or chunk) while the
  // staging ring has no room for a block of its size waits up to this long for the writer to
  // free room, before it takes the pool's eviction lock (BlockPoolOptions::before_evict; no pool
  // lock is held while it waits, and the evicting thread itself never does I/O). Its victim is
  // then staged instead of dropped. A wait that runs out drops the victim as before
  // (StoreStats::demotion_wait_timeouts). 0: never wait (drop at once). Measured in
  // docs/benchmarks.md ("Steady state"). Default: 50 ms.
  std::chrono::microseconds demotion_wait{50000};
  // Threads that serve Prefetch. Default: 1. REQUIRES: >= 1.
  uint32_t prefetch_threads = 1;
  // Called with the key of every block that leaves the host tier (evicted, or erased), e.g. to
  // tell the cluster directory. It runs on the evicting or erasing thread, possibly with the host
  // pool's eviction lock held: it must not call back into the store, and must not block.
  // Default: none.
  std::function<void(const BlockKey&)> on_host_removed;
  // Called when the host or disk tier gains (`added`) or loses a block: commits, promotions,
  // prefetches, write-back and write-through, evictions and erasures (KV events,
  // docs/kv-events.md). The device tier is not reported. `tag` is the block's tag
  // (PutOptions::tag, kept across tiers and restarts; empty: none), valid during the call. Same
  // rules as on_host_removed: it may run with a tier's lock held, must not call back into the
  // store and must not block. Default: none.
  std::function<void(TierKind tier, const BlockKey& key, bool added, std::string_view tag)>
      on_tier_change;
};

struct LookupResult {
  size_t prefix_blocks = 0;     // chain[0, prefix_blocks) is present locally
  std::vector<TierKind> where;  // size prefix_blocks: the fastest tier holding each block
};

// Completion of one Prefetch call.
class PrefetchTicket {
 public:
  // Blocks until every key of the call was handled; returns how many were brought to host.
  size_t Wait();
  bool done() const;
  size_t loaded() const;
  size_t failed() const;  // missing from disk, corrupt, or no host space

 private:
  friend class TieredStore;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  size_t pending_ GUARDED_BY(mu_) = 0;
  size_t loaded_ GUARDED_BY(mu_) = 0;
  size_t failed_ GUARDED_BY(mu_) = 0;
  bool hold_ = false;  // set before the ticket is queued, then read only
  std::vector<PinnedBlock> held_ GUARDED_BY(mu_);  // with hold_: the blocks brought to host
};

struct StoreStats {
  TierStats device, host, disk;
  uint64_t promotions = 0;        // disk -> host on Get
  uint64_t prefetched = 0;        // disk -> host by Prefetch
  uint64_t demotions = 0;         // host -> disk on eviction (write-back)
  uint64_t demotions_rejected = 0;  // evicted from host, not admitted to disk
  uint64_t demotion_errors = 0;     // admitted, but the disk write failed (e.g. disk full)
  uint64_t demotions_dropped = 0;   // admitted, but the staging ring was full: dropped at once
  uint64_t demotion_staged_bytes = 0;  // staged for the disk now
  uint64_t demotion_waits = 0;          // evicting puts that waited for staging room
  uint64_t demotion_wait_timeouts = 0;  // of those, waits that ran out (the victim was dropped)
  uint64_t device_copies = 0;       // host -> device copies published (CopyToDevice)
  uint64_t device_copy_batches = 0;  // batches those took (one device synchronisation each)
  uint64_t device_promotions = 0;   // device -> host (PromoteFromDevice)
  uint64_t device_corrupt = 0;      // device copies that failed verification on promotion
};

class TieredStore {
 public:
  // `device` is an optional device tier (device_tier.h, CUDA builds; any BlockPool serves, which
  // is how CPU tests exercise the logic). Whatever its kind, Lookup reports its blocks as
  // TierKind::kDevice.
  static Result<std::unique_ptr<TieredStore>> Open(const TieredStoreOptions& options,
                                                   std::unique_ptr<BlockPool> device = nullptr);
  ~TieredStore();

  // Builds the block header (XXH3-64 checksum of `payload`) and stores the block.
  Status Put(const BlockKey& key, const NamespaceId& ns, std::span<const std::byte> payload,
             const PutOptions& options = {}, Codec codec = Codec::kNone);
  // Stores a block that already has its header (from a client or a peer; verified by the host).
  // With write-through the disk is written first; an error from either tier leaves the block in
  // neither.
  Status PutBlock(const BlockHeader& header, std::span<const std::byte> payload,
                  const PutOptions& options = {});
  // Publishes a block that a producer wrote in place into the host pool (host().Reserve; the
  // daemon's zero-copy client stores). With write-through it is written to disk too, before it
  // becomes visible; when the disk refuses it (e.g. NoSpace) the reservation is released and
  // the error returned, and nothing of the block is visible. `verify` as BlockPool::Commit.
  // On any error the reservation has been released.
  Status CommitReserved(const WriteReservation& reservation, const BlockHeader& header,
                        const PutOptions& options, bool verify);
  // Keys cached in the host, device and disk tiers, of namespace `ns` (every namespace when
  // nullopt); a key in several appears once per tier.
  std::vector<BlockKey> Keys(const std::optional<NamespaceId>& ns) const;
  // Copies the payload into `out` (see Tier::Get). A disk hit is promoted to host.
  Result<BlockHeader> Get(const BlockKey& key, std::span<std::byte> out);
  LookupResult Lookup(std::span<const BlockKey> chain) const;
  // Queues the keys that are on disk and not in host for loading into host; keys elsewhere are
  // counted as handled at once. With `hold`, the ticket keeps each block it brought to host
  // pinned until the ticket is destroyed, so that a later block of the same call cannot evict an
  // earlier one before the caller pins it (a load's prefix; a block that finds no room then
  // fails instead of evicting its predecessors).
  std::shared_ptr<PrefetchTicket> Prefetch(std::span<const BlockKey> keys, bool hold = false);
  // Copies the blocks of `keys` that are in the device tier and not in host into host, in one
  // batch (one device synchronisation); each payload is verified against its header's checksum
  // as it is published (a device copy that fails is dropped and counted as device_corrupt).
  // Stops at the first block host has no room for. Returns how many were promoted. Without a
  // device tier: 0.
  size_t PromoteFromDevice(std::span<const BlockKey> keys);
  // Queues copies of the host blocks `keys` into the device tier; the device thread copies what
  // is queued in batches of up to kDeviceBatchBytes, skipping keys the device holds already or
  // host no longer holds. At most kDeviceQueueLimit keys wait; more are not queued (the device
  // tier is a cache). Without a device tier: nothing.
  void CopyToDevice(std::span<const BlockKey> keys);
  // Blocks until every copy queued by CopyToDevice so far is done.
  void WaitDeviceCopies();
  static constexpr uint64_t kDeviceBatchBytes = uint64_t{256} << 20;
  static constexpr size_t kDeviceQueueLimit = 65536;

  // Pins the block in the tier a read is served from (host, device, disk). NotFound if none
  // holds it.
  Status Pin(const BlockKey& key, std::chrono::milliseconds ttl);
  Status Unpin(const BlockKey& key);
  // Erases the block from every tier. NotFound if none held it; Unavailable if one is in use.
  Status Erase(const BlockKey& key);
  // Makes every block written to disk so far durable against power loss.
  Status Sync();
  StoreStats Stats() const;
  // The tag (PutOptions::tag) of a block some tier holds; empty when it has none.
  std::string TagOf(const BlockKey& key) const { return tags_.Get(key); }
  // Namespace of the block `key` in the host, device or disk tier (statistics; no access is
  // recorded).
  std::optional<NamespaceId> NamespaceOf(const BlockKey& key) const;
  // Lookup, load and store counters by tier and namespace (access_stats.h). The store counts the
  // blocks committed by CommitReserved; lookups and loads are counted by the caller that serves
  // them (the node), since the store's own Lookup also serves internal checks.
  AccessStats& access() { return access_; }
  const AccessStats& access() const { return access_; }

  // Waits until every block staged for disk so far is written (or failed). No-op without a
  // demotion queue.
  void DrainDemotions() {
    if (demotion_) demotion_->Drain();
  }

  HostTier& host() { return *host_; }
  DiskTier* disk() { return disk_.get(); }
  BlockPool* device() { return device_.get(); }

 private:
  explicit TieredStore(const TieredStoreOptions& options);
  void OnHostEvict(const BlockHeader& header, std::span<const std::byte> payload, bool shared);
  // Writes a demoted block to disk and counts it (the demotion queue's writer, or the evicting
  // thread when the queue is off).
  Status WriteDemoted(const BlockHeader& header, std::span<const std::byte> payload);
  void PrefetchLoop();
  void DeviceLoop();
  // One batch of CopyToDevice: the host blocks of `keys` the device lacks, host -> device.
  void CopyBatchToDevice(std::span<const BlockKey> keys);
  void CountAccess(const BlockKey& key);
  // Records the change in tags_ and reports it to on_tier_change with the block's tag.
  void Changed(TierKind tier, const BlockKey& key, bool added) {
    const std::string tag = tags_.Changed(tier, key, added);
    if (options_.on_tier_change) options_.on_tier_change(tier, key, added, tag);
  }

  const TieredStoreOptions options_;
  DiskAdmission admission_;
  std::unique_ptr<BlockPool> device_;
  std::unique_ptr<DiskTier> disk_;  // declared before host_: host_ (whose evictions write here)
  std::unique_ptr<DemotionQueue> demotion_;  // write-back staging; destroyed (drained) after host_
  std::unique_ptr<HostTier> host_;  // is destroyed first

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  struct Job {
    BlockKey key;
    std::shared_ptr<PrefetchTicket> ticket;
  };
  std::deque<Job> queue_ GUARDED_BY(queue_mu_);
  bool stop_ GUARDED_BY(queue_mu_) = false;
  std::vector<std::thread> workers_;

  std::mutex device_mu_;
  std::condition_variable device_cv_;
  std::deque<BlockKey> device_queue_ GUARDED_BY(device_mu_);
  bool device_busy_ GUARDED_BY(device_mu_) = false;  // a batch is being copied
  bool device_stop_ GUARDED_BY(device_mu_) = false;
  std::thread device_worker_;  // only with a device tier

  AccessStats access_;
  BlockTags tags_;  // PutOptions::tag of the blocks held, for on_tier_change and the disk
  std::atomic<uint64_t> promotions_{0}, prefetched_{0}, demotions_{0}, rejected_{0},
      demotion_errors_{0}, demotions_dropped_{0}, device_copies_{0}, device_copy_batches_{0},
      device_promotions_{0},
      device_corrupt_{0};
};

}  // namespace strata::store
