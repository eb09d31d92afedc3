#include "client/pool_filler.h"

#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <utility>

namespace strata {

namespace {

// Bytes per mincore call: the mmap lock is held for one such step.
constexpr uint64_t kStepBytes = uint64_t{64} << 10;
// Between passes over slabs that still miss pages.
constexpr auto kPassInterval = std::chrono::seconds(1);

}  // namespace

PoolFiller::PoolFiller(const std::byte* base, uint64_t slab_bytes, uint64_t slabs,
                       std::function<uint32_t(uint64_t slab)> generation_of)
    : base_(base),
      slab_bytes_(slab_bytes),
      slabs_(slabs),
      generation_of_(std::move(generation_of)),
      thread_([this] { Run(); }) {
  // Named here, not by the thread: the name is there when Connect returns.
  (void)pthread_setname_np(thread_.native_handle(), kThreadName);
}

PoolFiller::~PoolFiller() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true, std::memory_order_relaxed);
  }
  cv_.notify_all();
  thread_.join();
}

void PoolFiller::Run() {
  struct Finished {
    std::atomic<bool>* flag;
    ~Finished() { flag->store(true, std::memory_order_release); }
  } finished{&finished_};
  // Only time no other thread of the machine wants (never fails for lowering one's own policy).
  sched_param idle{};
  (void)sched_setscheduler(0, SCHED_IDLE, &idle);
  std::unique_ptr<uint32_t[]> done(new uint32_t[slabs_]);
  for (uint64_t s = 0; s < slabs_; ++s) done[s] = kUnmapped;
  uint64_t last_missing = 0;
  for (;;) {
    const PassResult r = Pass(done.get());
    // Done, or no progress: nothing filled and no page more found in the slabs still missing some.
    if (r.missing == 0 || (r.filled == 0 && r.missing_resident <= last_missing) ||
        stop_.load(std::memory_order_relaxed))
      return;
    last_missing = r.missing_resident;
    std::unique_lock<std::mutex> lock(mu_);
    if (cv_.wait_for(lock, kPassInterval, [&] { return stop_.load(std::memory_order_relaxed); }))
      return;
  }
}

PoolFiller::PassResult PoolFiller::Pass(uint32_t* done) {
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  unsigned char vec[kStepBytes / 4096 + 1];
  PassResult r;
  for (uint64_t slab = 0; slab < slabs_; ++slab) {
    const uint32_t gen = generation_of_(slab);
    if (gen == kUnmapped || done[slab] == gen) continue;  // not this client's, or filled
    bool complete = true;
    uint64_t resident = 0;
    const std::byte* at = base_ + slab * slab_bytes_;
    for (uint64_t off = 0; off < slab_bytes_ && complete; off += kStepBytes) {
      if (stop_.load(std::memory_order_relaxed)) return r;
      // A renewal mapped a fresh memfd over the slab: start it again at the next pass.
      if (generation_of_(slab) != gen) {
        complete = false;
        break;
      }
      const uint64_t len = std::min(kStepBytes, slab_bytes_ - off);
      void* p = const_cast<std::byte*>(at + off);
      if (::mincore(p, len, vec) != 0) {
        complete = false;
        break;
      }
      for (uint64_t i = 0; i < (len + page - 1) / page; ++i) {
        if ((vec[i] & 1) == 0) {
          complete = false;  // the daemon has not got this page yet
          continue;
        }
        (void)*reinterpret_cast<const volatile unsigned char*>(at + off + i * page);
        ++resident;
      }
    }
    if (complete) {
      done[slab] = gen;
      filled_bytes_.fetch_add(slab_bytes_, std::memory_order_relaxed);
      ++r.filled;
    } else {
      ++r.missing;
      r.missing_resident += resident;
    }
  }
  return r;
}

}  // namespace strata
