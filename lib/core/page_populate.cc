#include "page_populate.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22  // Linux 5.14
#endif

namespace strata {

BackgroundPopulate::BackgroundPopulate(const void* base, size_t bytes, size_t step, size_t page)
    : stop_(std::make_unique<std::atomic<bool>>(false)) {
  thread_ = std::thread([p = static_cast<char*>(const_cast<void*>(base)), bytes,
                         step = std::max<size_t>(step, page), page, stop = stop_.get()] {
    bool madvise_works = true;
    for (size_t at = 0; at < bytes && !stop->load(std::memory_order_relaxed); at += step) {
      const size_t n = std::min(step, bytes - at);
      if (madvise_works) {
        if (::madvise(p + at, n, MADV_POPULATE_READ) == 0) continue;
        if (errno != EINVAL) return;  // EFAULT, ENOMEM, ...: the copies fault the rest in
        madvise_works = false;        // before Linux 5.14: a read of each page faults it in
      }
      for (size_t q = at; q < at + n; q += page) (void)*static_cast<volatile const char*>(p + q);
    }
  });
}

BackgroundPopulate& BackgroundPopulate::operator=(BackgroundPopulate&& other) noexcept {
  if (this != &other) {
    Stop();
    stop_ = std::move(other.stop_);
    thread_ = std::move(other.thread_);
  }
  return *this;
}

void BackgroundPopulate::Stop() {
  if (!thread_.joinable()) return;
  stop_->store(true, std::memory_order_relaxed);
  thread_.join();
}

}  // namespace strata
