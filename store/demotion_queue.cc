#include "store/demotion_queue.h"

#include <cstdlib>
#include <cstring>

namespace strata::store {
namespace {

constexpr uint64_t kAlign = 4096;  // O_DIRECT writes go straight from the ring

uint64_t RoundUp(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

}  // namespace

void DemotionQueue::AlignedFree::operator()(std::byte* p) const { std::free(p); }

Result<std::unique_ptr<DemotionQueue>> DemotionQueue::Open(uint64_t capacity_bytes, Sink sink) {
  if (capacity_bytes == 0) return Status::InvalidArgument("demotion queue capacity must be > 0");
  if (!sink) return Status::InvalidArgument("demotion queue needs a sink");
  std::unique_ptr<DemotionQueue> q(new DemotionQueue(RoundUp(capacity_bytes, kAlign),
                                                     std::move(sink)));
  if (!q->ring_) return Status::ResourceExhausted("demotion queue: cannot allocate the ring");
  q->writer_ = std::thread([p = q.get()] { p->WriterLoop(); });
  return q;
}

DemotionQueue::DemotionQueue(uint64_t capacity_bytes, Sink sink)
    : capacity_(capacity_bytes),
      ring_(static_cast<std::byte*>(std::aligned_alloc(kAlign, capacity_bytes))),
      sink_(std::move(sink)) {
  stats_.capacity_bytes = capacity_;
}

DemotionQueue::~DemotionQueue() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  if (writer_.joinable()) writer_.join();
}

bool DemotionQueue::PlaceLocked(uint64_t need, uint64_t* at, uint64_t* span) const {
  *at = 0;
  *span = need;
  if (need > capacity_) return false;
  if (entries_.empty()) return true;  // the ring restarts at 0
  const uint64_t tail = entries_.front().offset;
  if (head_ > tail) {  // free: [head_, capacity_) and [0, tail)
    if (capacity_ - head_ >= need) {
      *at = head_;
      return true;
    }
    if (tail >= need) {
      *span = need + (capacity_ - head_);  // the skipped end is held until this one retires
      return true;
    }
    return false;
  }
  if (tail - head_ >= need) {  // wrapped: free is [head_, tail)
    *at = head_;
    return true;
  }
  return false;
}

bool DemotionQueue::Enqueue(const BlockHeader& header, std::span<const std::byte> payload) {
  const uint64_t need = RoundUp(std::max<uint64_t>(payload.size(), 1), kAlign);
  std::lock_guard lock(mu_);
  uint64_t at = 0, span = need;
  if (!PlaceLocked(need, &at, &span)) {
    ++stats_.dropped_full;
    return false;
  }
  std::memcpy(ring_.get() + at, payload.data(), payload.size());
  entries_.push_back({header, at, payload.size(), span});
  head_ = at + need;
  used_ += span;
  ++enqueued_;
  ++stats_.queued;
  work_cv_.notify_one();
  return true;
}

bool DemotionQueue::WaitForRoom(uint64_t bytes, std::chrono::microseconds timeout) {
  const uint64_t need = RoundUp(std::max<uint64_t>(bytes, 1), kAlign);
  uint64_t at = 0, span = 0;
  std::unique_lock lock(mu_);
  if (PlaceLocked(need, &at, &span)) return true;
  if (need > capacity_ || timeout.count() <= 0) return false;
  ++stats_.waits;
  const bool room = done_cv_.wait_for(lock, timeout, [&] {
    return stop_ || PlaceLocked(need, &at, &span);
  }) && !stop_;
  if (!room) ++stats_.wait_timeouts;
  return room;
}

bool DemotionQueue::Read(const BlockKey& key, BlockHeader* header,
                         std::vector<std::byte>* out) const {
  std::lock_guard lock(mu_);
  for (const Entry& e : entries_) {
    if (e.header.key != key) continue;
    out->assign(ring_.get() + e.offset, ring_.get() + e.offset + e.length);
    *header = e.header;
    return true;
  }
  return false;
}

bool DemotionQueue::Contains(const BlockKey& key) const {
  std::lock_guard lock(mu_);
  for (const Entry& e : entries_)
    if (e.header.key == key) return true;
  return false;
}

void DemotionQueue::Drain() {
  std::unique_lock lock(mu_);
  const uint64_t target = enqueued_;
  done_cv_.wait(lock, [&] { return retired_ >= target; });
}

DemotionQueueStats DemotionQueue::Stats() const {
  std::lock_guard lock(mu_);
  DemotionQueueStats st = stats_;
  st.staged_bytes = used_;
  return st;
}

void DemotionQueue::WriterLoop() {
  std::unique_lock lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stop_ || !entries_.empty(); });
    if (entries_.empty()) return;  // stopping, everything written
    const Entry e = entries_.front();  // stays queued (readable) while it is written
    lock.unlock();
    const Status st = sink_(e.header, {ring_.get() + e.offset, e.length});
    lock.lock();
    entries_.pop_front();
    used_ -= e.span;
    ++retired_;
    ++(st.ok() ? stats_.written : stats_.failed);
    done_cv_.notify_all();
  }
}

}  // namespace strata::store
