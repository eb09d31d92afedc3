#include "client/slab_prefaulter.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22  // Linux >= 5.14
#endif

namespace strata {

SlabPrefaulter::SlabPrefaulter(MadviseFn madvise_fn)
    : madvise_(madvise_fn != nullptr ? madvise_fn : &::madvise) {}

void SlabPrefaulter::Enqueue(const std::byte* base, uint64_t bytes, uint64_t from) {
  if (base == nullptr || bytes == 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (stop_ || !supported_) return;
  jobs_.push_back(Job{base, bytes, std::min(from, bytes)});
  if (!thread_.joinable()) thread_ = std::thread([this] { Loop(); });
  cv_.notify_one();
}

void SlabPrefaulter::Stop() {
  std::thread t;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    jobs_.clear();
    t = std::move(thread_);
  }
  cv_.notify_one();
  if (t.joinable()) t.join();
}

SlabPrefaulter::Stats SlabPrefaulter::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return Stats{populated_, dropped_, supported_, jobs_.size()};
}

void SlabPrefaulter::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
    if (stop_) return;
    const Job job = jobs_.front();
    jobs_.pop_front();
    lock.unlock();
    // Page-aligned by construction: slabs are multiples of 2 MiB; `from` is rounded down.
    const uint64_t from = job.from / 4096 * 4096;
    const bool kept = Populate(job.base + from, job.bytes - from) && Populate(job.base, from);
    lock.lock();
    if (!kept && supported_) ++dropped_;
  }
}

bool SlabPrefaulter::Populate(const std::byte* at, uint64_t bytes) {
  int retries = 0;
  for (uint64_t done = 0; done < bytes;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return false;
    }
    const uint64_t n = std::min(kPieceBytes, bytes - done);
    if (madvise_(const_cast<std::byte*>(at + done), n, MADV_POPULATE_READ) != 0) {
      const int err = errno;
      if ((err == EINTR || err == EAGAIN) && ++retries <= 3) continue;  // a signal, a busy page
      std::lock_guard<std::mutex> lock(mu_);
      if (err == EINVAL) {  // no MADV_POPULATE_READ here: the loads fault as before
        supported_ = false;
        jobs_.clear();
      }
      return false;
    }
    done += n;
    retries = 0;
    std::lock_guard<std::mutex> lock(mu_);
    populated_ += n;
  }
  return true;
}

}  // namespace strata
