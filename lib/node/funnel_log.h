// FunnelLog: the node's recent lookups and loads, per namespace, for `strata inspect funnel`
// (docs/operations.md, "Inspector"): lookups -> blocks found (per tier) -> blocks loaded -> loaded
// before the deadline -> loaded faster than recomputing, and the net benefit in seconds.
//
// Each lookup and each load is one event (about 48 bytes) in a ring of kCapacity events of each
// kind, so a window reaches back at most that many requests; Funnel says whether the window was
// covered whole. A load's time is the node's: from the request to the blocks pinned in the host
// pool (peer pulls, disk and device promotions included); the client's copy out of the pool
// follows and is not counted.
//
// "Faster than recomputing" weighs each load against the rate at which the engine would
// recompute its blocks: the rate the engine of the namespace reported (ReportRate, from
// Client::SetRecomputeRate) when the load happened; else the node's configured rate; else
// unknown, and the funnel's faster/benefit figures are null (never 0). A query may override both
// (`strata inspect funnel --recompute-tps`).
//
// Thread-safety: all methods are thread-safe (one mutex, one short critical section a request).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "strata/namespace.h"

namespace strata {

class FunnelLog {
 public:
  static constexpr size_t kCapacity = 65536;

  // Tiers in the order of a lookup's answer, fastest first.
  enum Source : uint8_t { kDevice = 0, kHost = 1, kDisk = 2, kPeers = 3 };

  // One lookup of `blocks` keys of `ns` (nullopt: the lookup named no namespace and matched
  // nothing), `found[t]` of them found in tier t.
  void Lookup(const std::optional<NamespaceId>& ns, uint32_t blocks,
              const std::array<uint32_t, 4>& found);
  // One load of `asked` keys of `ns` that pinned `loaded` of them in `seconds`.
  void Load(const NamespaceId& ns, uint32_t asked, uint32_t loaded, double seconds);
  // The engine of `ns` recomputes `tokens_per_second` tokens a second; the loads of `ns` from
  // now on are weighed against it. REQUIRES: tokens_per_second > 0.
  void ReportRate(const NamespaceId& ns, double tokens_per_second);

  struct Query {
    double window_s = 300;
    double deadline_s = 1.0;  // a load slower than this did not help the engine
    // Replaces every other rate (a what-if; `--recompute-tps`).
    std::optional<double> recompute_tokens_per_second;
    // The node's configured rate, for loads of namespaces whose engine reported none.
    std::optional<double> configured_tokens_per_second;
    // Tokens per block of a namespace (its block_size), when it was described.
    std::function<std::optional<uint32_t>(const NamespaceId&)> block_size;
  };
  // The JSON object of the funnel over the last q.window_s seconds (docs/operations.md).
  std::string Funnel(const Query& q) const;

 private:
  struct LookupEvent {
    int64_t unix_ms = 0;
    NamespaceId ns;
    bool ns_known = false;
    uint32_t blocks = 0;
    std::array<uint32_t, 4> found{};
  };
  struct LoadEvent {
    int64_t unix_ms = 0;
    NamespaceId ns;
    uint32_t asked = 0;
    uint32_t loaded = 0;
    double seconds = 0;
    double engine_tps = 0;  // the engine's reported rate for ns at the time; 0: none
  };
  mutable std::mutex mu_;
  std::vector<LookupEvent> lookups_;  // GUARDED_BY(mu_): ring, next_lookup_ the next slot
  std::vector<LoadEvent> loads_;      // GUARDED_BY(mu_)
  size_t next_lookup_ = 0, next_load_ = 0;  // GUARDED_BY(mu_)
  std::map<NamespaceId, double> engine_tps_;  // GUARDED_BY(mu_): the latest reported rates
  uint64_t lookups_total_ = 0, loads_total_ = 0;  // GUARDED_BY(mu_)
};

}  // namespace strata
