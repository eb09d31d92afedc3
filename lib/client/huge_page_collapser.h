// HugePageCollapser: puts registered engine KV into transparent huge pages with MADV_COLLAPSE on a
// background thread of the client (ClientOptions::kv_huge_pages = kCollapse; docs/data-plane.md,
// "Engine KV in huge pages").
//
// Why in the background: MADV_COLLAPSE copies every 4 KiB page into a fresh huge page, about
// 3-4 s per GiB on the development VM; inside RegisterKvCache that stalled an engine's start for
// as long. Here RegisterKvCache only queues the cache's advised ranges and returns; the thread
// collapses them 32 MiB at a time, and each CollapseJob says how much is done, so a paged store
// picks the path that is best for the pages as they are at that moment (staging while they are
// 4 KiB pages, cross-memory once the cache is mostly collapsed: RegisteredCache::InHugePages).
// One thread per client, one job after another: two collapses at once would only compete for the
// same memory bandwidth and free huge pages.
//
// Never a failure: a refusal (EINVAL: a kernel before 6.1 or a mapping it cannot collapse;
// ENOMEM: no free huge page, or a range no longer mapped; EAGAIN: a busy page) leaves those pages
// as they were; after anything but EAGAIN the rest of that job is not tried (each try may compact
// memory). The engine's bytes are never changed: MADV_COLLAPSE copies page contents.
//
// Thread-safety: Start and Cancel may be called from any thread. A job's counters are atomics,
// read without a lock.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "client/huge_pages.h"

namespace strata {

// Bytes per MADV_COLLAPSE: one refusal costs no more than that, and a Cancel waits for at most
// one such piece (~0.1 s).
inline constexpr uint64_t kCollapsePieceBytes = uint64_t{32} << 20;

// One cache's collapse, as far as it went.
class CollapseJob {
 public:
  explicit CollapseJob(std::vector<MemoryRange> ranges);
  uint64_t total_bytes() const { return total_; }
  uint64_t collapsed_bytes() const { return collapsed_.load(std::memory_order_acquire); }
  // True once the thread will not touch the job again: every piece tried, a refusal ended it,
  // or it was cancelled.
  bool finished() const { return finished_.load(std::memory_order_acquire); }
  bool cancelled() const { return cancelled_.load(std::memory_order_acquire); }
  // The first refusal (0: none); read it after finished().
  int collapse_errno() const { return errno_.load(std::memory_order_acquire); }

 private:
  friend class HugePageCollapser;
  const std::vector<MemoryRange> ranges_;
  const uint64_t total_;
  std::atomic<uint64_t> collapsed_{0};
  std::atomic<bool> finished_{false};
  mutable std::atomic<bool> cancelled_{false};  // set by Cancel through a const handle
  std::atomic<int> errno_{0};
};

class HugePageCollapser {
 public:
  // `madvise_fn`: as AdviseHugePages (nullptr: ::madvise).
  explicit HugePageCollapser(MadviseFn madvise_fn = nullptr);
  // Cancels every job (waiting for the piece in flight) and joins the thread.
  ~HugePageCollapser();
  HugePageCollapser(const HugePageCollapser&) = delete;
  HugePageCollapser& operator=(const HugePageCollapser&) = delete;

  // Queues the collapse of `ranges` (HugePageAdvice::advised: huge-page aligned) and returns at
  // once; the thread starts with the first job.
  std::shared_ptr<const CollapseJob> Start(std::vector<MemoryRange> ranges);

  // Stops `job`: returns once no MADV_COLLAPSE of it runs or will run (the piece in flight, if
  // any, finishes first). After it the engine may free or reuse the memory. A finished job is left
  // as it is.
  void Cancel(const std::shared_ptr<const CollapseJob>& job);

 private:
  void Run();
  void Collapse(CollapseJob* job);

  const MadviseFn madvise_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<CollapseJob>> queue_;  // GUARDED_BY(mu_)
  const CollapseJob* running_ = nullptr;            // GUARDED_BY(mu_)
  bool stop_ = false;                               // GUARDED_BY(mu_)
  std::thread thread_;                              // started by the first Start
};

}  // namespace strata
