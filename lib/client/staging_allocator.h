// StagingAllocator: hands out byte ranges of the client's staging memory (docs/data-plane.md) to
// the calls that write payloads there before the daemon copies them into its pool. First fit over
// a free list, coalescing on release; a call that needs more than is free waits until enough is
// released, so concurrent stores share the staging memory instead of failing.
//
// Thread-safety: all methods are thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>

#include "strata/result.h"

namespace strata {

class StagingAllocator {
 public:
  explicit StagingAllocator(uint64_t bytes) : bytes_(bytes) {
    if (bytes > 0) free_[0] = bytes;
  }

  uint64_t bytes() const { return bytes_; }

  // The offset of `n` bytes (64-byte aligned), waiting for releases while they are not free.
  // NoSpace when `n` exceeds the whole staging memory (the caller must split its request).
  Result<uint64_t> Acquire(uint64_t n) {
    n = (n + 63) & ~uint64_t{63};
    if (n == 0) n = 64;
    if (n > bytes_)
      return Status::NoSpace("needs " + std::to_string(n) +
                             " bytes of staging memory, the client has " + std::to_string(bytes_) +
                             " (ClientOptions::staging_bytes)");
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      for (auto it = free_.begin(); it != free_.end(); ++it) {
        if (it->second < n) continue;
        const uint64_t off = it->first, left = it->second - n;
        free_.erase(it);
        if (left > 0) free_[off + n] = left;
        return off;
      }
      cv_.wait(lock);
    }
  }

  // Returns what Acquire(n) gave at `offset`.
  void Release(uint64_t offset, uint64_t n) {
    n = (n + 63) & ~uint64_t{63};
    if (n == 0) n = 64;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto [it, inserted] = free_.emplace(offset, n);
      auto next = std::next(it);
      if (next != free_.end() && it->first + it->second == next->first) {
        it->second += next->second;
        free_.erase(next);
      }
      if (it != free_.begin()) {
        auto prev = std::prev(it);
        if (prev->first + prev->second == it->first) {
          prev->second += it->second;
          free_.erase(it);
        }
      }
    }
    cv_.notify_all();
  }

 private:
  const uint64_t bytes_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, uint64_t> free_;  // offset -> length. GUARDED_BY(mu_)
};

// Holds a range of a StagingAllocator until destroyed.
class StagingLease {
 public:
  StagingLease() = default;
  StagingLease(StagingAllocator* a, uint64_t offset, uint64_t n) : a_(a), offset_(offset), n_(n) {}
  StagingLease(StagingLease&& o) noexcept : a_(o.a_), offset_(o.offset_), n_(o.n_) {
    o.a_ = nullptr;
  }
  StagingLease& operator=(StagingLease&& o) noexcept {
    if (this != &o) {
      Reset();
      a_ = o.a_;
      offset_ = o.offset_;
      n_ = o.n_;
      o.a_ = nullptr;
    }
    return *this;
  }
  ~StagingLease() { Reset(); }
  void Reset() {
    if (a_ != nullptr) a_->Release(offset_, n_);
    a_ = nullptr;
  }
  uint64_t offset() const { return offset_; }
  uint64_t size() const { return n_; }

 private:
  StagingAllocator* a_ = nullptr;
  uint64_t offset_ = 0;
  uint64_t n_ = 0;
};

}  // namespace strata
