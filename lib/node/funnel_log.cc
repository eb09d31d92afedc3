#include "node/funnel_log.h"

#include <chrono>
#include <map>

#include <nlohmann/json.hpp>

namespace strata {
namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

void FunnelLog::Lookup(const std::optional<NamespaceId>& ns, uint32_t blocks,
                       const std::array<uint32_t, 4>& found) {
  LookupEvent e;
  e.unix_ms = NowMs();
  if (ns) {
    e.ns = *ns;
    e.ns_known = true;
  }
  e.blocks = blocks;
  e.found = found;
  std::lock_guard<std::mutex> lock(mu_);
  if (lookups_.size() < kCapacity) {
    lookups_.push_back(e);
  } else {
    lookups_[next_lookup_] = e;
    next_lookup_ = (next_lookup_ + 1) % kCapacity;
  }
  ++lookups_total_;
}

void FunnelLog::ReportRate(const NamespaceId& ns, double tokens_per_second) {
  std::lock_guard<std::mutex> lock(mu_);
  engine_tps_[ns] = tokens_per_second;
}

void FunnelLog::Load(const NamespaceId& ns, uint32_t asked, uint32_t loaded, double seconds) {
  LoadEvent e{NowMs(), ns, asked, loaded, seconds};
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = engine_tps_.find(ns); it != engine_tps_.end()) e.engine_tps = it->second;
  if (loads_.size() < kCapacity) {
    loads_.push_back(e);
  } else {
    loads_[next_load_] = e;
    next_load_ = (next_load_ + 1) % kCapacity;
  }
  ++loads_total_;
}

std::string FunnelLog::Funnel(const Query& q) const {
  using nlohmann::json;
  const int64_t now = NowMs();
  const int64_t since = now - static_cast<int64_t>(q.window_s * 1000);
  struct Row {
    uint64_t lookups = 0, blocks = 0;
    std::array<uint64_t, 4> found{};
    uint64_t loads = 0, load_asked = 0, loaded = 0, in_time = 0, faster = 0;
    double load_seconds = 0, benefit_s = 0;
    bool benefit_known = true;
    std::optional<double> rate;       // the latest rate a load of the window was weighed with
    std::string rate_source;          // "query", "engine", "configured" or "mixed"; "": none
  };
  std::map<std::string, Row> rows;  // namespace id (hex) or "unattributed"
  bool covered = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // A full ring whose oldest event is inside the window lost the window's start.
    if (lookups_.size() == kCapacity && lookups_[next_lookup_].unix_ms > since) covered = false;
    if (loads_.size() == kCapacity && loads_[next_load_].unix_ms > since) covered = false;
    for (const LookupEvent& e : lookups_) {
      if (e.unix_ms < since) continue;
      Row& r = rows[e.ns_known ? e.ns.ToHex() : "unattributed"];
      ++r.lookups;
      r.blocks += e.blocks;
      for (size_t t = 0; t < 4; ++t) r.found[t] += e.found[t];
    }
    for (const LoadEvent& e : loads_) {
      if (e.unix_ms < since) continue;
      Row& r = rows[e.ns.ToHex()];
      ++r.loads;
      r.load_asked += e.asked;
      r.loaded += e.loaded;
      r.load_seconds += e.seconds;
      if (e.seconds > q.deadline_s) continue;
      r.in_time += e.loaded;
      const std::optional<uint32_t> bs = q.block_size ? q.block_size(e.ns) : std::nullopt;
      std::optional<double> rate;
      const char* source = "";
      if (q.recompute_tokens_per_second) {
        rate = q.recompute_tokens_per_second;
        source = "query";
      } else if (e.engine_tps > 0) {
        rate = e.engine_tps;
        source = "engine";
      } else if (q.configured_tokens_per_second) {
        rate = q.configured_tokens_per_second;
        source = "configured";
      }
      if (!rate || !bs) {
        r.benefit_known = false;
        continue;
      }
      r.rate = rate;
      r.rate_source = r.rate_source.empty() || r.rate_source == source ? source : "mixed";
      const double recompute_s = double(e.loaded) * *bs / *rate;
      if (e.seconds < recompute_s) r.faster += e.loaded;
      r.benefit_s += recompute_s - e.seconds;
    }
  }
  json out = json::array();
  for (const auto& [id, r] : rows) {
    uint64_t found = 0;
    for (uint64_t f : r.found) found += f;
    json n = {{"namespace", id},
              {"lookups", r.lookups},
              {"lookup_blocks", r.blocks},
              {"found_blocks", found},
              {"found", {{"device", r.found[kDevice]},
                         {"host", r.found[kHost]},
                         {"disk", r.found[kDisk]},
                         {"peers", r.found[kPeers]}}},
              {"loads", r.loads},
              {"load_asked_blocks", r.load_asked},
              {"loaded_blocks", r.loaded},
              {"loaded_before_deadline_blocks", r.in_time},
              {"load_seconds", r.load_seconds}};
    const bool known = r.benefit_known && r.rate.has_value();
    n["faster_than_recompute_blocks"] = known ? json(r.faster) : json(nullptr);
    n["net_benefit_seconds"] = known ? json(r.benefit_s) : json(nullptr);
    n["recompute_tokens_per_second"] = r.rate ? json(*r.rate) : json(nullptr);
    n["recompute_rate_source"] = r.rate_source.empty() ? json(nullptr) : json(r.rate_source);
    n["hit_ratio"] = r.blocks ? json(double(found) / r.blocks) : json(nullptr);
    out.push_back(std::move(n));
  }
  // The rate for loads no engine reported one for: the query's, else the node's configured one.
  const std::optional<double> fallback = q.recompute_tokens_per_second
                                             ? q.recompute_tokens_per_second
                                             : q.configured_tokens_per_second;
  json j = {{"window_s", q.window_s},
            {"window_covered", covered},
            {"deadline_s", q.deadline_s},
            {"recompute_tokens_per_second", fallback ? json(*fallback) : json(nullptr)},
            {"recompute_rate_source", q.recompute_tokens_per_second ? json("query")
                                      : fallback ? json("configured") : json(nullptr)},
            {"namespaces", out}};
  return j.dump();
}

}  // namespace strata
