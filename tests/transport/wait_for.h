// WaitFor: polls a condition until it holds or a time limit passes, for tests that wait on other
// processes (etcd leases, peers joining or leaving, daemons answering). Used by the transport
// tests and by tests/cluster/.
//
// Thread-safety: WaitFor calls `pred` on the calling thread only.
#pragma once

#include <chrono>
#include <thread>

namespace strata::transport::testing {

// Calls `pred` every 20 ms until it returns true or `limit` has passed, then once more.
// Returns true if it held.
template <typename Pred>
bool WaitFor(std::chrono::milliseconds limit, Pred&& pred) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

}  // namespace strata::transport::testing
