// DemotionQueue: host -> disk write-back off the eviction path (docs/store.md, "Hierarchy").
//
// A host eviction that demotes a block copies it into a staging ring (one memcpy, under the
// pool's eviction lock, no I/O) and returns; a writer thread of the queue writes staged blocks to
// the disk tier in order and frees their staging space. When the ring has no room for a block,
// Enqueue refuses it at once (the block is dropped from the hierarchy, which a cache may do, and
// counted); under the eviction lock nothing waits for the disk. A put that is about to evict may
// first wait a bounded time for room (WaitForRoom), holding no pool lock. While a block is staged, Read finds it,
// so a block on its way to disk is not a miss.
//
// The staging ring is allocated once (4 KiB-aligned, so the disk's O_DIRECT writes go straight
// from it); nothing on the enqueue path allocates except the entry deque's growth.
//
// Thread-safety: all methods are thread-safe. Enqueue and Read hold the queue's mutex for a
// memcpy at most; the writer holds it only to take and to retire an entry, never across I/O.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <thread>

#include "store/thread_annotations.h"
#include "strata/block_format.h"
#include "strata/result.h"

namespace strata::store {

struct DemotionQueueStats {
  uint64_t queued = 0;        // blocks accepted
  uint64_t written = 0;       // blocks the sink stored
  uint64_t failed = 0;        // blocks the sink refused (e.g. disk full)
  uint64_t dropped_full = 0;  // blocks refused because the ring had no room
  uint64_t waits = 0;          // WaitForRoom calls that found no room at once and waited
  uint64_t wait_timeouts = 0;  // of those, the ones whose time ran out without room
  uint64_t staged_bytes = 0;  // bytes staged now
  uint64_t capacity_bytes = 0;
};

class DemotionQueue {
 public:
  // Writes one block to the next tier down; runs on the queue's writer thread.
  using Sink = std::function<Status(const BlockHeader&, std::span<const std::byte>)>;

  // A ring of `capacity_bytes` (rounded up to 4 KiB). InvalidArgument for 0.
  static Result<std::unique_ptr<DemotionQueue>> Open(uint64_t capacity_bytes, Sink sink);
  // Writes what is staged, then stops the writer.
  ~DemotionQueue();

  // Stages a copy of the block for the writer. False, at once, when the ring has no room.
  bool Enqueue(const BlockHeader& header, std::span<const std::byte> payload);
  // Waits up to `timeout` until the ring has room for a block of `bytes` (the writer retires
  // entries). True when there is room now (another thread may take it first). Called by a put
  // that is about to evict, before it takes the pool's eviction lock (TieredStoreOptions::
  // demotion_wait): it waits for the disk a bounded time instead of its victim being dropped.
  bool WaitForRoom(uint64_t bytes, std::chrono::microseconds timeout);
  // Copies a staged block's payload into `out` (resized) and its header into `*header`. False
  // when `key` is not staged.
  bool Read(const BlockKey& key, BlockHeader* header, std::vector<std::byte>* out) const;
  bool Contains(const BlockKey& key) const;
  // Waits until every block staged before the call is written (or failed).
  void Drain();

  DemotionQueueStats Stats() const;

 private:
  struct Entry {
    BlockHeader header;
    uint64_t offset;  // in the ring
    uint64_t length;  // payload bytes
    uint64_t span;    // ring bytes it holds (aligned, plus any skipped end of the ring)
  };
  struct AlignedFree {
    void operator()(std::byte* p) const;
  };

  DemotionQueue(uint64_t capacity_bytes, Sink sink);
  void WriterLoop();
  // Where a block of `need` (aligned) bytes would go: its ring offset and the ring bytes it
  // would hold. False when the ring has no room for it now.
  bool PlaceLocked(uint64_t need, uint64_t* at, uint64_t* span) const REQUIRES_LOCK(mu_);

  const uint64_t capacity_;
  std::unique_ptr<std::byte[], AlignedFree> ring_;
  Sink sink_;
  mutable std::mutex mu_;
  std::condition_variable work_cv_;  // an entry was queued, or stop
  std::condition_variable done_cv_;  // an entry was retired
  std::deque<Entry> entries_ GUARDED_BY(mu_);  // oldest first; front may be being written
  uint64_t head_ GUARDED_BY(mu_) = 0;          // next free ring offset
  uint64_t used_ GUARDED_BY(mu_) = 0;          // ring bytes held by entries
  uint64_t retired_ GUARDED_BY(mu_) = 0;       // entries retired so far
  uint64_t enqueued_ GUARDED_BY(mu_) = 0;      // entries accepted so far
  bool stop_ GUARDED_BY(mu_) = false;
  DemotionQueueStats stats_ GUARDED_BY(mu_);
  std::thread writer_;
};

}  // namespace strata::store
