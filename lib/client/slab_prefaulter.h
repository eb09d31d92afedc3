// Fills this process's page table for the pool slabs it maps, in a thread of its own (docs/
// data-plane.md, "Prefaulted slabs"). A client maps a slab of the daemon's pool read-only when a
// load first reads from it (SocketChannel::MapForRead); every 4 KiB page of that mapping then
// faults the first time this process reads it (filemap_map_pages, 64 KiB per fault): a quarter of
// a cold 2 MiB load's time. After a slab is mapped, this thread asks the kernel to map all of it
// (madvise MADV_POPULATE_READ, Linux >= 5.14), starting just past the block that was read (loads
// tend to go forward), so the loads that follow find their pages mapped and the faults are paid
// beside them, not in them. Nothing is copied and no memory is allocated: the pages are the
// pool's, already there.
//
// Best effort by contract: a kernel without MADV_POPULATE_READ (EINVAL) turns it off for good,
// any other refusal drops that slab; loads fault their pages as before. The range must stay mapped
// (at any generation: a remap over it is harmless) until Stop returns. Thread-safe.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>

namespace strata {

class SlabPrefaulter {
 public:
  // The madvise the populate goes through (::madvise; tests substitute a refusing one).
  using MadviseFn = int (*)(void* address, size_t length, int advice);
  explicit SlabPrefaulter(MadviseFn madvise_fn = nullptr);
  ~SlabPrefaulter() { Stop(); }
  SlabPrefaulter(const SlabPrefaulter&) = delete;
  SlabPrefaulter& operator=(const SlabPrefaulter&) = delete;

  // Queues [base, base + bytes) to be populated from offset `from` to its end, then from its
  // start up to `from`. The thread starts at the first call. No-op once stopped or unsupported.
  void Enqueue(const std::byte* base, uint64_t bytes, uint64_t from);
  // Drops what is queued and returns when the thread has finished its current piece (one
  // kPieceBytes madvise at most). Later Enqueues do nothing.
  void Stop();

  struct Stats {
    uint64_t populated_bytes = 0;  // madvise succeeded on these
    uint64_t dropped_slabs = 0;    // a refusal other than EINVAL ended the slab's populate
    bool supported = true;         // false once the kernel answered EINVAL
    uint64_t queued = 0;           // slabs still waiting
  };
  Stats stats() const;

  // One madvise covers this much, so Stop waits for no more than that.
  static constexpr uint64_t kPieceBytes = uint64_t{2} << 20;

 private:
  struct Job {
    const std::byte* base;
    uint64_t bytes;
    uint64_t from;
  };
  void Loop();
  // Populates [at, at + bytes) piece by piece; false when the slab is to be dropped.
  bool Populate(const std::byte* at, uint64_t bytes);

  const MadviseFn madvise_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;      // GUARDED_BY(mu_)
  bool stop_ = false;         // GUARDED_BY(mu_)
  bool supported_ = true;     // GUARDED_BY(mu_)
  uint64_t populated_ = 0;    // GUARDED_BY(mu_)
  uint64_t dropped_ = 0;      // GUARDED_BY(mu_)
  std::thread thread_;        // started under mu_ by the first Enqueue
};

}  // namespace strata
