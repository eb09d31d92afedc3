// Request metrics of this process and their Prometheus text exposition (docs/operations.md,
// "Metrics"). The request handler times every request into the process-wide RequestMetrics
// (one per process, like a Prometheus client's default registry: the daemon and an embedded
// client each have theirs); RenderPrometheus turns them, with a node's StatsJson, into the text
// that `/metrics` serves.
//
// Thread-safety: Observe/Count are lock-free (relaxed atomics; a scrape is not one instant).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

namespace strata::metrics {

// The request kinds that are timed, in the protocol's order.
enum class Request : uint8_t {
  kHello, kLookup, kStoreBegin, kStoreCommit, kLoad, kUnpin, kPrefetch, kStats, kClear,
  kInspect, kOther, kCount
};
std::string_view RequestName(Request r);

// A latency histogram over fixed bucket bounds (seconds: 10 us .. 10 s, about 3 per decade).
class Histogram {
 public:
  static constexpr std::array<double, 19> kBounds = {
      1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2,
      2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  void Observe(double seconds);
  // Cumulative counts per bound (Prometheus `le`), then +Inf; the sum in seconds.
  std::array<uint64_t, kBounds.size() + 1> Cumulative() const;
  double sum() const;
  uint64_t count() const;

 private:
  std::array<std::atomic<uint64_t>, kBounds.size() + 1> buckets_{};
  std::atomic<uint64_t> sum_ns_{0};
};

struct RequestMetrics {
  std::array<Histogram, static_cast<size_t>(Request::kCount)> latency;
  std::array<std::atomic<uint64_t>, static_cast<size_t>(Request::kCount)> errors{};
  std::atomic<uint64_t> store_bytes{0};  // payload bytes of committed stores (as requested)
  std::atomic<uint64_t> load_bytes{0};   // payload bytes of the locations loads returned
};

// The process-wide request metrics.
RequestMetrics& Requests();

// The Prometheus text exposition (format 0.0.4) of `stats_json` (Node::StatsJson), the request
// metrics and the daemon's session counts.
struct DaemonGauges {
  uint64_t active_sessions = 0;
  uint64_t sessions_served = 0;
  uint64_t refused = 0;
  double uptime_s = 0;
};
std::string RenderPrometheus(const std::string& stats_json, const DaemonGauges& daemon);

}  // namespace strata::metrics
