#include "client/copy_threads.h"

#include <algorithm>

namespace strata {

// One ParallelFor call: `parts` ranges, claimed by whoever gets to them first.
struct CopyThreads::Job {
  size_t n = 0;
  size_t parts = 0;
  const std::function<void(size_t, size_t)>* fn = nullptr;
  std::atomic<size_t> next{0};  // the next range to claim
  std::mutex mu;
  std::condition_variable done_cv;
  size_t done = 0;  // GUARDED_BY(mu): ranges finished
};

CopyThreads::CopyThreads(int helpers) {
  for (int i = 0; i < helpers; ++i) threads_.emplace_back([this] { Run(); });
}

CopyThreads::~CopyThreads() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

int CopyThreads::DefaultHelpers() {
  const unsigned cores = std::thread::hardware_concurrency();
  return static_cast<int>(std::clamp<unsigned>(cores, 1, 4) - 1);
}

// Claims and runs ranges of `job` until none is left.
void CopyThreads::Work(Job* job) {
  while (true) {
    const size_t part = job->next.fetch_add(1, std::memory_order_relaxed);
    if (part >= job->parts) return;
    // Ranges of n / parts items, the first n % parts of them one longer.
    const size_t base = job->n / job->parts, extra = job->n % job->parts;
    const size_t begin = part * base + std::min(part, extra);
    const size_t end = begin + base + (part < extra ? 1 : 0);
    (*job->fn)(begin, end);
    std::lock_guard<std::mutex> lock(job->mu);
    if (++job->done == job->parts) job->done_cv.notify_all();
  }
}

void CopyThreads::Run() {
  while (true) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
      if (stop_) return;
      job = jobs_.front();
      // The last range claimed: nothing left for the other helpers.
      if (job->next.load(std::memory_order_relaxed) + 1 >= job->parts) jobs_.pop_front();
    }
    Work(job.get());
  }
}

void CopyThreads::ParallelFor(size_t n, size_t min_items,
                              const std::function<void(size_t, size_t)>& fn) {
  if (n == 0) return;
  const size_t by_size = n / std::max<size_t>(1, min_items);
  const size_t parts = std::clamp<size_t>(by_size, 1, threads_.size() + 1);
  if (parts == 1) {
    fn(0, n);
    return;
  }
  auto job = std::make_shared<Job>();
  job->n = n;
  job->parts = parts;
  job->fn = &fn;
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back(job);
  }
  for (size_t i = 1; i < parts; ++i) cv_.notify_one();
  Work(job.get());
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Every range is claimed: a helper that has not looked at the job yet must not find it.
    auto it = std::find(jobs_.begin(), jobs_.end(), job);
    if (it != jobs_.end()) jobs_.erase(it);
  }
  std::unique_lock<std::mutex> lock(job->mu);
  job->done_cv.wait(lock, [&] { return job->done == job->parts; });
}

}  // namespace strata
