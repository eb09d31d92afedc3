#include "client/slab_populator.h"

#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

namespace strata {

namespace {

// One step: one huge page's worth, so that Stop waits for little and a slab in 2 MiB pages takes
// one fault per step.
constexpr uint64_t kStepBytes = uint64_t{2} << 20;

}  // namespace

void SlabPopulator::Add(const std::byte* at, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_.load(std::memory_order_relaxed)) return;
  for (const auto& [a, n] : queue_)
    if (a == at && n == bytes) return;
  queue_.emplace_back(at, bytes);
  if (!thread_.joinable()) thread_ = std::thread([this] { Run(); });
  wake_.notify_one();
}

void SlabPopulator::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_.store(true, std::memory_order_relaxed);
    queue_.clear();
  }
  wake_.notify_one();
  // No Add starts the thread once stopping_ is set under mu_: thread_ does not change any more.
  if (thread_.joinable()) thread_.join();
}

void SlabPopulator::Run() {
  // Only on a core nothing else wants: the loads this saves faults for never wait behind it (on a
  // busy host the loads fault the pages in themselves, as without the populator).
  const sched_param idle{};
  (void)::sched_setscheduler(0, SCHED_IDLE, &idle);
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    wake_.wait(lock, [this] {
      return stopping_.load(std::memory_order_relaxed) || !queue_.empty();
    });
    if (stopping_.load(std::memory_order_relaxed)) return;
    const auto [at, bytes] = queue_.front();
    queue_.pop_front();
    lock.unlock();
    (void)Populate(at, bytes);
    lock.lock();
  }
}

bool SlabPopulator::Populate(const std::byte* at, uint64_t bytes) {
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> resident(kStepBytes / page);
  for (uint64_t off = 0; off < bytes; off += kStepBytes) {
    if (stopping_.load(std::memory_order_relaxed)) return false;
    auto* p = const_cast<std::byte*>(at) + off;
    const uint64_t pages = std::min(kStepBytes, bytes - off) / page;
    // Which pages the memfd holds (shmem: its page cache, whatever this process has mapped).
    if (::mincore(p, pages * page, resident.data()) != 0) return false;
    for (uint64_t i = 0; i < pages;) {
      if ((resident[i] & 1) == 0) {
        ++i;
        continue;
      }
      uint64_t j = i;
      while (j < pages && (resident[j] & 1) != 0) ++j;
      std::byte* run = p + i * page;
      const uint64_t run_bytes = (j - i) * page;
      i = j;
      if (madvise_works_) {
        if (::madvise(run, run_bytes, MADV_POPULATE_READ) == 0) continue;
        if (errno != EINVAL) return false;  // unmapped meanwhile, or a signal: loads fault it in
        madvise_works_ = false;             // before Linux 5.14: a read of each page maps it
      }
      for (uint64_t q = 0; q < run_bytes; q += page)
        (void)*reinterpret_cast<volatile const char*>(run + q);
    }
  }
  return true;
}

}  // namespace strata
