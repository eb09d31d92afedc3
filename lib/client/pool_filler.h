// PoolFiller: fills this process's page table for the daemon's host pool on a thread of its own,
// after Connect mapped every slab without filling it (ClientOptions::MapPool::kBackground;
// docs/data-plane.md, "The pool mapped at connect").
//
// Why: with 4 KiB pool pages the first read of each page by a client faults (16 pages per fault),
// about half of a 2 MiB load's time; filling the page table on the connecting thread costs
// 0.2 s per GiB of pool (an 8 GiB pool: seconds of Connect). Here Connect maps and returns; the
// thread fills slab after slab, low slabs first (the daemon's allocator hands them out first),
// and a load that reads a page before the thread got there faults as it would have anyway.
//
// Only pages the daemon already has are filled: each 64 KiB step asks mincore() which pages are
// in the slab's memfd, and only those are read. So a pool the daemon is still populating, or a
// slab renewed for another tenant (a fresh memfd holding only the pages written since), is never
// allocated by this client; pages missing at one pass are tried again at the next, a second
// later, until a pass fills no slab and finds no page more than the one before (a slab renewed
// after that is filled by its loads' faults). (A slab renewed between a step's
// mincore and its reads can have up to 16 of its new pages allocated by the reads: pages the
// daemon is about to write anyway.)
//
// Locks: the pages are filled by reading them (one load per page, the kernel's fault-around
// mapping 16 per fault), not with MADV_POPULATE_READ, because a fault holds only the slab's own
// VMA lock while MADV_POPULATE_READ and mincore hold the process's mmap lock for reading, which
// every mmap/munmap of the engine's process waits for; with the thread at SCHED_IDLE, a holder
// preempted on a busy core would stall them (a priority inversion). mincore's hold is one 64 KiB
// step (16 pages, about a microsecond). Measured cost: the same per-page work as the loads'
// faults or MADV_POPULATE_READ (0.16-0.22 s per GiB on the development VM, docs/benchmarks.md).
//
// Thread-safety: the constructor starts the thread; the destructor stops it (within one step)
// and joins it, and must run before the pool's mapping goes. `generation_of(slab)` is called
// from the thread: the generation the slab is mapped at, or kUnmapped.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

namespace strata {

class PoolFiller {
 public:
  static constexpr uint32_t kUnmapped = UINT32_MAX;
  // The thread's name, as /proc/self/task/*/comm shows it while it runs.
  static constexpr const char* kThreadName = "strata-poolfill";

  PoolFiller(const std::byte* base, uint64_t slab_bytes, uint64_t slabs,
             std::function<uint32_t(uint64_t slab)> generation_of);
  ~PoolFiller();
  PoolFiller(const PoolFiller&) = delete;
  PoolFiller& operator=(const PoolFiller&) = delete;

  // Pool bytes whose page-table entries the thread has made or found (whole slabs, counted once
  // per generation).
  uint64_t filled_bytes() const { return filled_bytes_.load(std::memory_order_relaxed); }
  // True once the thread has ended: every slab filled, or a pass found nothing more to fill.
  bool finished() const { return finished_.load(std::memory_order_acquire); }

 private:
  void Run();
  // One pass over the slabs not filled at their current generation (`done[slab]`: the
  // generation the slab was filled at, updated here).
  struct PassResult {
    uint64_t filled = 0;            // slabs filled whole by this pass
    uint64_t missing = 0;           // slabs left with pages the daemon has not got (or renewed)
    uint64_t missing_resident = 0;  // pages read in those
  };
  PassResult Pass(uint32_t* done);

  const std::byte* const base_;
  const uint64_t slab_bytes_;
  const uint64_t slabs_;
  const std::function<uint32_t(uint64_t)> generation_of_;
  std::atomic<uint64_t> filled_bytes_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> finished_{false};
  std::mutex mu_;
  std::condition_variable cv_;  // wakes the thread between passes when stop_ is set
  std::thread thread_;
};

}  // namespace strata
