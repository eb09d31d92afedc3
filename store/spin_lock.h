// A test-and-test-and-set spin lock for critical sections of a few dozen instructions (a bucket
// chain walk, a free-list pop), where a futex-based mutex's syscall on contention costs more than
// the work. Satisfies BasicLockable, so std::lock_guard works. Cache-line sized so that arrays of
// locks (lock striping) do not false-share.
//
// Thread-safety: that is its purpose. Not recursive.
#pragma once

#include <atomic>

#include "store/thread_annotations.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace strata::store {

class CAPABILITY("mutex") alignas(64) SpinLock {
 public:
  void lock() ACQUIRE() {
    for (;;) {
      if (!locked_.exchange(true, std::memory_order_acquire)) return;
      while (locked_.load(std::memory_order_relaxed)) Pause();
    }
  }
  bool try_lock() { return !locked_.exchange(true, std::memory_order_acquire); }
  void unlock() RELEASE() { locked_.store(false, std::memory_order_release); }

 private:
  static void Pause() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
  }
  std::atomic<bool> locked_{false};
};

}  // namespace strata::store
