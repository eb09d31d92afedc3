// SlabPopulator: fills this process's page tables for the pool slabs a client has just mapped, on
// a thread of its own, so that a load's copy out of the pool does not take the first-touch faults
// (docs/data-plane.md, "A slab's page tables filled when it is mapped").
//
// A slab mapped read-only from the daemon's memfd has no page-table entries in the client until
// each page is read; a 2 MiB load from a freshly mapped slab then takes 32 faults (16 pages each,
// the kernel's fault-around) inside the copy. Add() queues a mapped range; the thread asks the
// kernel which of its pages the memfd holds (mincore) and maps those, 2 MiB at a time, with
// MADV_POPULATE_READ (Linux 5.14; before it, a read of each page). Pages the daemon has not
// allocated yet are left alone: populating them would allocate the daemon's memory, charged to
// this process. Nothing is written and no page is made writable: the mapping stays read-only.
//
// Thread-safety: Add may be called from any thread. Ownership: the ranges stay owned by the
// caller, who must Stop() (or destroy) the populator before unmapping them; a range mapped over
// again (MAP_FIXED, another generation of the slab) while it is being populated is simply
// populated from the new mapping on, and the caller queues it again.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>

namespace strata {

class SlabPopulator {
 public:
  SlabPopulator() = default;
  SlabPopulator(const SlabPopulator&) = delete;
  SlabPopulator& operator=(const SlabPopulator&) = delete;
  ~SlabPopulator() { Stop(); }

  // Queues [at, at + bytes) (readable, page-aligned) to be populated; starts the thread at the
  // first call. A range already queued and not yet started is not queued twice.
  void Add(const std::byte* at, uint64_t bytes);
  // Stops the thread after the 2 MiB step in progress and joins it; later Adds do nothing.
  void Stop();
 private:
  void Run();
  // Maps the pages of [at, at + bytes) the memfd holds; false once Stop was called.
  bool Populate(const std::byte* at, uint64_t bytes);

  std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::pair<const std::byte*, uint64_t>> queue_;  // GUARDED_BY(mu_)
  std::atomic<bool> stopping_{false};                          // set under mu_, read anywhere
  bool madvise_works_ = true;                                  // the thread's own
  std::thread thread_;                                         // started under mu_
};

}  // namespace strata
