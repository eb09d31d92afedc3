// CopyThreads: splits one bulk copy of KV bytes (a load's verify-and-scatter out of the pool) over
// the calling thread and a few helper threads.
//
// Why: the fused verify-and-scatter (ScatterWithChecksum) hashes as it copies, and one core does
// that at about half the speed of a plain memcpy of the same bytes (docs/benchmarks.md, "engine"):
// the core, not DRAM, is the limit. A second core brings the load to the memory's speed. The
// calling thread always works too, so a call never waits on helpers that are busy with another
// call's ranges: it claims the ranges nobody started yet itself.
//
// Thread-safety: ParallelFor may be called from several threads at once.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace strata {

class CopyThreads {
 public:
  // `helpers` threads besides the callers (0: every call runs on its caller alone).
  explicit CopyThreads(int helpers);
  ~CopyThreads();
  CopyThreads(const CopyThreads&) = delete;
  CopyThreads& operator=(const CopyThreads&) = delete;

  // The default number of helpers: one per further core, at most 3 (a 4-way split of a copy
  // already reaches DRAM's speed on the machines measured; more only takes cores from the engine).
  static int DefaultHelpers();

  // Calls fn(begin, end) over consecutive ranges covering [0, n), each at least `min_items` long
  // (one range when n < 2 * min_items), on this thread and the helpers; returns when every call
  // has returned. fn must not throw.
  void ParallelFor(size_t n, size_t min_items, const std::function<void(size_t, size_t)>& fn);

  int helpers() const { return static_cast<int>(threads_.size()); }

 private:
  struct Job;
  void Run();
  static void Work(Job* job);

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> jobs_;  // GUARDED_BY(mu_): jobs with ranges not yet claimed
  bool stop_ = false;                      // GUARDED_BY(mu_)
  std::vector<std::thread> threads_;
};

}  // namespace strata
