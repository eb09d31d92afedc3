#include "daemon/metrics.h"

#include <cmath>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "strata/version.h"

namespace strata::metrics {
namespace {

using nlohmann::json;

// Appends Prometheus text; one HELP/TYPE pair per family, written once before its samples.
class Writer {
 public:
  void Family(std::string_view name, std::string_view type, std::string_view help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }
  void Sample(std::string_view name, std::string_view labels, double value) {
    out_ += name;
    if (!labels.empty()) {
      out_ += '{';
      out_ += labels;
      out_ += '}';
    }
    out_ += ' ';
    char buf[64];
    if (value == std::floor(value) && std::fabs(value) < 9.0e15)
      std::snprintf(buf, sizeof buf, "%.0f", value);
    else
      std::snprintf(buf, sizeof buf, "%.9g", value);
    out_ += buf;
    out_ += '\n';
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

double Num(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : 0.0;
}

std::string Label(std::string_view name, std::string_view value) {
  std::string out(name);
  out += "=\"";
  for (char c : value) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  out += '"';
  return out;
}

// Every numeric leaf of `j` under `prefix`, as gauges (the cluster section; its per-peer
// "peers" object is rendered by PeerPulls).
void Flatten(Writer& w, const std::string& prefix, const json& j) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (prefix == "strata_cluster" && it.key() == "peers") continue;
    std::string name = prefix + "_" + it.key();
    for (char& c : name)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') c = '_';
    if (it->is_object()) {
      Flatten(w, name, *it);
    } else if (it->is_number() || it->is_boolean()) {
      w.Family(name, "gauge", "cluster statistic (docs/cluster.md)");
      w.Sample(name, "", it->is_boolean() ? (it->get<bool>() ? 1 : 0) : it->get<double>());
    }
  }
}

// This node's pulls from each peer (Cluster::StatsJson "peers"): counters and a histogram of a
// pull's time (post to completion), labelled by peer id.
void PeerPulls(Writer& w, const json& peers) {
  static constexpr struct {
    const char* name;
    const char* field;
    const char* help;
  } kCounters[] = {
      {"strata_peer_pulls_total", "pulls", "Pull operations this node made from the peer"},
      {"strata_peer_pulled_blocks_total", "pulled_blocks", "Blocks pulled from the peer"},
      {"strata_peer_pulled_bytes_total", "pulled_bytes", "Payload bytes pulled from the peer"},
      {"strata_peer_pull_failures_total", "pull_failures",
       "Blocks whose pull from the peer failed (error, timeout, verification)"},
  };
  for (const auto& c : kCounters) {
    w.Family(c.name, "counter", c.help);
    for (auto it = peers.begin(); it != peers.end(); ++it)
      w.Sample(c.name, Label("peer", it.key()), Num(*it, c.field));
  }
  w.Family("strata_peer_pull_duration_seconds", "histogram",
           "Time of a pull from the peer, post to completion");
  for (auto it = peers.begin(); it != peers.end(); ++it) {
    const json& h = (*it)["pull_seconds"];
    if (!h.is_object()) continue;
    const std::string peer = Label("peer", it.key());
    const json& le = h["le"];
    const json& cum = h["cumulative"];
    if (!le.is_array() || !cum.is_array() || cum.size() != le.size() + 1) continue;
    for (size_t b = 0; b < le.size(); ++b) {
      char bound[32];
      std::snprintf(bound, sizeof bound, "%g", le[b].get<double>());
      w.Sample("strata_peer_pull_duration_seconds_bucket", peer + "," + Label("le", bound),
               cum[b].get<double>());
    }
    w.Sample("strata_peer_pull_duration_seconds_bucket", peer + "," + Label("le", "+Inf"),
             cum.back().get<double>());
    w.Sample("strata_peer_pull_duration_seconds_sum", peer, Num(h, "sum"));
    w.Sample("strata_peer_pull_duration_seconds_count", peer, cum.back().get<double>());
  }
}

}  // namespace

std::string_view RequestName(Request r) {
  static constexpr std::string_view kNames[] = {"hello", "lookup", "store_begin", "store_commit",
                                                "load", "unpin", "prefetch", "stats", "clear",
                                                "inspect", "other"};
  const size_t i = static_cast<size_t>(r);
  return i < std::size(kNames) ? kNames[i] : "unknown";
}

void Histogram::Observe(double seconds) {
  size_t i = 0;
  while (i < kBounds.size() && seconds > kBounds[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(static_cast<uint64_t>(std::max(0.0, seconds) * 1e9),
                    std::memory_order_relaxed);
}

std::array<uint64_t, Histogram::kBounds.size() + 1> Histogram::Cumulative() const {
  std::array<uint64_t, kBounds.size() + 1> out{};
  uint64_t run = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    run += buckets_[i].load(std::memory_order_relaxed);
    out[i] = run;
  }
  return out;
}

double Histogram::sum() const { return sum_ns_.load(std::memory_order_relaxed) / 1e9; }
uint64_t Histogram::count() const { return Cumulative().back(); }

RequestMetrics& Requests() {
  static RequestMetrics metrics;
  return metrics;
}

std::string RenderPrometheus(const std::string& stats_json, const DaemonGauges& daemon) {
  Writer w;
  const json s = json::parse(stats_json, nullptr, /*allow_exceptions=*/false);
  w.Family("strata_build_info", "gauge", "Strata version of this daemon (value 1)");
  w.Sample("strata_build_info", Label("version", Version()), 1);
  w.Family("strata_uptime_seconds", "gauge", "Seconds since the daemon started");
  w.Sample("strata_uptime_seconds", "", daemon.uptime_s);
  w.Family("strata_client_sessions", "gauge", "Client sessions connected now");
  w.Sample("strata_client_sessions", "", static_cast<double>(daemon.active_sessions));
  w.Family("strata_client_sessions_total", "counter", "Client sessions accepted since start");
  w.Sample("strata_client_sessions_total", "", static_cast<double>(daemon.sessions_served));
  w.Family("strata_client_refused_total", "counter",
           "Connections refused (credentials, per-uid cap, max_clients)");
  w.Sample("strata_client_refused_total", "", static_cast<double>(daemon.refused));

  // Per tier: occupancy, lookups, loads, evictions, checksum failures.
  struct TierFamily {
    const char* name;
    const char* field;
    const char* type;
    const char* help;
  };
  static constexpr TierFamily kTier[] = {
      {"strata_tier_capacity_bytes", "capacity_bytes", "gauge", "Bytes the tier may hold"},
      {"strata_tier_used_bytes", "payload_bytes", "gauge", "Payload bytes cached in the tier"},
      {"strata_tier_blocks", "blocks", "gauge", "Blocks cached in the tier"},
      {"strata_tier_metadata_bytes", "metadata_bytes", "gauge", "Index and policy memory"},
      {"strata_tier_hits_total", "hits", "counter",
       "Looked-up blocks found, by the fastest tier holding them"},
      {"strata_tier_misses_total", "misses", "counter",
       "Looked-up blocks not found in this tier or a faster one"},
      {"strata_tier_served_blocks_total", "served_blocks", "counter",
       "Blocks handed to loads, by source tier"},
      {"strata_tier_served_bytes_total", "served_bytes", "counter",
       "Payload bytes handed to loads, by source tier"},
      {"strata_tier_puts_total", "puts", "counter", "Blocks written into the tier"},
      {"strata_tier_evictions_total", "evictions", "counter", "Blocks evicted from the tier"},
      {"strata_tier_corrupt_dropped_total", "corrupt_dropped", "counter",
       "Blocks that failed checksum verification and were dropped"},
      {"strata_tier_raw_payload_bytes", "raw_payload_bytes", "gauge",
       "Payload bytes cached in the tier before compression (disk)"},
      {"strata_tier_compressed_blocks", "compressed_blocks", "gauge",
       "Blocks stored compressed (disk)"},
      {"strata_tier_decompress_errors_total", "decompress_errors", "counter",
       "Stored blocks that did not decompress and were dropped (disk)"},
  };
  static constexpr const char* kTiers[] = {"device", "host", "disk", "remote"};
  for (const TierFamily& f : kTier) {
    bool any = false;
    for (const char* t : kTiers) {
      auto it = s.find(t);
      if (it == s.end() || !it->is_object() || !it->contains(f.field)) continue;
      if (!any) w.Family(f.name, f.type, f.help);
      any = true;
      w.Sample(f.name, Label("tier", t), Num(*it, f.field));
    }
  }
  w.Family("strata_pinned_blocks", "gauge", "Load pins clients hold now");
  w.Sample("strata_pinned_blocks", "", Num(s, "pins"));
  struct Scalar {
    const char* name;
    const char* field;
    const char* help;
  };
  static constexpr Scalar kCounters[] = {
      {"strata_promotions_total", "promotions", "Disk -> host promotions on read"},
      {"strata_prefetched_total", "prefetched", "Disk -> host promotions by prefetch"},
      {"strata_demotions_total", "demotions", "Host -> disk demotions on eviction"},
      {"strata_demotions_rejected_total", "demotions_rejected",
       "Host evictions not admitted to disk"},
      {"strata_demotion_errors_total", "demotion_errors", "Demotions the disk refused"},
      {"strata_demotions_dropped_total", "demotions_dropped",
       "Admitted demotions dropped: the staging ring stayed full past the wait"},
      {"strata_demotion_waits_total", "demotion_waits",
       "Evicting puts that waited for demotion staging room"},
      {"strata_demotion_wait_timeouts_total", "demotion_wait_timeouts",
       "Waits for demotion staging room that ran out"},
      {"strata_device_copies_total", "device_copies", "Host -> device copies"},
      {"strata_device_promotions_total", "device_promotions", "Device -> host promotions"},
      {"strata_device_corrupt_total", "device_corrupt",
       "Device copies that failed verification"},
      {"strata_namespace_fingerprint_mismatches_total", "namespace_fingerprint_mismatches",
       "Namespace descriptions that did not fingerprint to their namespace id"},
  };
  for (const Scalar& c : kCounters) {
    w.Family(c.name, "counter", c.help);
    w.Sample(c.name, "", Num(s, c.field));
  }
  w.Family("strata_pool_bytes", "gauge", "Bytes of the shared host pool");
  w.Sample("strata_pool_bytes", "", Num(s, "pool_bytes"));
  if (auto l = s.find("lookups"); l != s.end() && l->is_object()) {
    w.Family("strata_lookups_total", "counter", "Lookup requests");
    w.Sample("strata_lookups_total", "", Num(*l, "requests"));
    w.Family("strata_lookup_blocks_total", "counter", "Blocks asked by lookups, by outcome");
    w.Sample("strata_lookup_blocks_total", Label("outcome", "hit"), Num(*l, "hit_blocks"));
    w.Sample("strata_lookup_blocks_total", Label("outcome", "miss"), Num(*l, "miss_blocks"));
  }
  if (auto p = s.find("store_paths"); p != s.end() && p->is_object()) {
    w.Family("strata_stored_blocks_total", "counter",
             "Blocks stores published, by the path their bytes came (staging, cross_memory: "
             "whole blocks read out of the client, cross_memory_gather: paged stores gathered "
             "out of the client, mapped_gather: paged stores gathered from the daemon's mapping "
             "of a KV cache the client shared)");
    for (auto it = p->begin(); it != p->end(); ++it)
      w.Sample("strata_stored_blocks_total", Label("path", it.key()), Num(*it, "blocks"));
    w.Family("strata_stored_bytes_total", "counter",
             "Payload bytes stores published, by the path their bytes came");
    for (auto it = p->begin(); it != p->end(); ++it)
      w.Sample("strata_stored_bytes_total", Label("path", it.key()), Num(*it, "bytes"));
  }
  if (auto n = s.find("namespaces"); n != s.end() && n->is_object()) {
    static constexpr Scalar kNs[] = {
        {"strata_namespace_hits_total", "hits", "Looked-up blocks found, per namespace"},
        {"strata_namespace_misses_total", "misses", "Looked-up blocks missed, per namespace"},
        {"strata_namespace_stored_blocks_total", "blocks_stored", "Blocks stored"},
        {"strata_namespace_stored_bytes_total", "bytes_stored", "Payload bytes stored"},
        {"strata_namespace_served_blocks_total", "blocks_served", "Blocks loaded"},
        {"strata_namespace_served_bytes_total", "bytes_served", "Payload bytes loaded"},
    };
    for (const Scalar& c : kNs) {
      w.Family(c.name, "counter", c.help);
      for (auto it = n->begin(); it != n->end(); ++it)
        w.Sample(c.name, Label("namespace", it.key()), Num(*it, c.field));
    }
  }

  RequestMetrics& r = Requests();
  w.Family("strata_request_duration_seconds", "histogram",
           "Time the daemon took to answer a request, by request type");
  for (size_t i = 0; i < static_cast<size_t>(Request::kCount); ++i) {
    const std::string req = Label("request", RequestName(static_cast<Request>(i)));
    const auto cum = r.latency[i].Cumulative();
    for (size_t b = 0; b < Histogram::kBounds.size(); ++b) {
      char le[32];
      std::snprintf(le, sizeof le, "%g", Histogram::kBounds[b]);
      w.Sample("strata_request_duration_seconds_bucket", req + "," + Label("le", le),
               static_cast<double>(cum[b]));
    }
    w.Sample("strata_request_duration_seconds_bucket", req + "," + Label("le", "+Inf"),
             static_cast<double>(cum.back()));
    w.Sample("strata_request_duration_seconds_sum", req, r.latency[i].sum());
    w.Sample("strata_request_duration_seconds_count", req, static_cast<double>(cum.back()));
  }
  w.Family("strata_request_errors_total", "counter", "Requests answered with an error");
  for (size_t i = 0; i < static_cast<size_t>(Request::kCount); ++i)
    w.Sample("strata_request_errors_total",
             Label("request", RequestName(static_cast<Request>(i))),
             static_cast<double>(r.errors[i].load(std::memory_order_relaxed)));
  w.Family("strata_request_bytes_total", "counter", "Payload bytes of stores and loads");
  w.Sample("strata_request_bytes_total", Label("request", "store_commit"),
           static_cast<double>(r.store_bytes.load(std::memory_order_relaxed)));
  w.Sample("strata_request_bytes_total", Label("request", "load"),
           static_cast<double>(r.load_bytes.load(std::memory_order_relaxed)));
  if (auto c = s.find("cluster"); c != s.end() && c->is_object()) {
    Flatten(w, "strata_cluster", *c);
    if (auto p = c->find("peers"); p != c->end() && p->is_object()) PeerPulls(w, *p);
  }
  return w.Take();
}

}  // namespace strata::metrics
