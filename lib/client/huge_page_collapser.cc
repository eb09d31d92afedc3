#include "client/huge_page_collapser.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

namespace strata {
namespace {

uint64_t Total(const std::vector<MemoryRange>& ranges) {
  uint64_t total = 0;
  for (const MemoryRange& r : ranges) total += r.bytes;
  return total;
}

}  // namespace

CollapseJob::CollapseJob(std::vector<MemoryRange> ranges)
    : ranges_(std::move(ranges)), total_(Total(ranges_)) {}

HugePageCollapser::HugePageCollapser(MadviseFn madvise_fn)
    : madvise_(madvise_fn != nullptr ? madvise_fn : &::madvise) {}

HugePageCollapser::~HugePageCollapser() {
  {
    std::unique_lock<std::mutex> lock(mu_);
    stop_ = true;
    for (const auto& job : queue_) job->cancelled_.store(true, std::memory_order_release);
    if (running_ != nullptr) running_->cancelled_.store(true, std::memory_order_release);
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::shared_ptr<const CollapseJob> HugePageCollapser::Start(std::vector<MemoryRange> ranges) {
  auto job = std::make_shared<CollapseJob>(std::move(ranges));
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(job);
    if (!thread_.joinable()) thread_ = std::thread([this] { Run(); });
  }
  cv_.notify_all();
  return job;
}

void HugePageCollapser::Cancel(const std::shared_ptr<const CollapseJob>& job) {
  if (job == nullptr) return;
  std::unique_lock<std::mutex> lock(mu_);
  // Set under the lock: the thread takes a job and checks the flag under it, so a job not yet
  // taken never starts, and one running sees the flag before its next piece.
  job->cancelled_.store(true, std::memory_order_release);
  cv_.wait(lock, [&] { return running_ != job.get(); });
}

void HugePageCollapser::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stop_, nothing left
    std::shared_ptr<CollapseJob> job = std::move(queue_.front());
    queue_.pop_front();
    if (!job->cancelled() && !stop_) {
      running_ = job.get();
      lock.unlock();
      Collapse(job.get());
      lock.lock();
      running_ = nullptr;
    }
    job->finished_.store(true, std::memory_order_release);
    cv_.notify_all();  // a Cancel waiting for this job
  }
}

void HugePageCollapser::Collapse(CollapseJob* job) {
  for (const MemoryRange& r : job->ranges_) {
    const auto begin = reinterpret_cast<uint64_t>(r.begin), end = begin + r.bytes;
    for (uint64_t at = begin; at < end; at += kCollapsePieceBytes) {
      if (job->cancelled()) return;
      const uint64_t len = std::min(kCollapsePieceBytes, end - at);
      if (madvise_(reinterpret_cast<void*>(at), len, MADV_COLLAPSE) == 0) {
        job->collapsed_.fetch_add(len, std::memory_order_acq_rel);
        continue;
      }
      const int err = errno;
      int none = 0;
      job->errno_.compare_exchange_strong(none, err, std::memory_order_acq_rel);
      // EAGAIN: a page was busy, the next piece may still go. Anything else (EINVAL: a kernel
      // before 6.1 or a mapping it cannot collapse; ENOMEM: no free huge page, or a range no
      // longer mapped) holds for the rest too, and each try may compact memory: stop.
      if (err != EAGAIN) return;
    }
  }
}

}  // namespace strata
