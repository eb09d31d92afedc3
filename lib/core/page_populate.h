// Filling a read-only mapping's page table in the background, ahead of the copies that will read
// it, so that they do not fault it in page by page (4 KiB pages: ~0.25 ms per MiB):
// MADV_POPULATE_READ (Linux 5.14) one step at a time; before 5.14 (EINVAL), a read of each page.
// Used for the pool slabs a node maps of a same-host holder (transport/peer_pool_mapping.cc) and
// the engine KV the daemon maps (lib/daemon/shared_kv.cc). A copy that gets to a page first
// faults it in itself; both ways give the same bytes.
//
// Thread-safety: construct, move, Stop and destroy on the owner's thread; the populating thread
// only reads the range.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <thread>

namespace strata {

class BackgroundPopulate {
 public:
  BackgroundPopulate() = default;
  // Starts populating [base, base + bytes) in madvise calls of `step` bytes; `page` is the page
  // size of the mapping (the pre-5.14 fallback reads one byte of each). The range must stay mapped
  // until Stop() returns.
  BackgroundPopulate(const void* base, size_t bytes, size_t step, size_t page = 4096);
  ~BackgroundPopulate() { Stop(); }
  BackgroundPopulate(BackgroundPopulate&& other) noexcept = default;
  BackgroundPopulate& operator=(BackgroundPopulate&& other) noexcept;
  BackgroundPopulate(const BackgroundPopulate&) = delete;
  BackgroundPopulate& operator=(const BackgroundPopulate&) = delete;

  // Stops after the step in progress and waits for the thread (at most one step's time); the
  // range may be unmapped after it returns. No-op when nothing runs.
  void Stop();

 private:
  std::unique_ptr<std::atomic<bool>> stop_;  // on the heap: the thread keeps it across moves
  std::thread thread_;
};

}  // namespace strata
