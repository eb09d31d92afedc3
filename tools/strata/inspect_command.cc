// `strata inspect`: what a node holds and why a prefix misses (docs/operations.md, "Inspector").
// Live against a daemon's socket (the Inspect request of docs/client-protocol.md), or offline
// against a disk tier's directory (`--data-dir DIR`: RocksDB opened read-only, works with no
// daemon running). Both print the same JSON with --json (node/inspect.h), or tables.
//
// With --all, the command runs against every member of the local daemon's cluster: the local
// daemon's `peers` answer lists the members with the socket and the inspect endpoint each
// published in membership. A member on this host is asked through its socket; a member on
// another host through its inspect endpoint (`strata serve --inspect-addr`, HTTP authenticated
// with the cluster secret: $STRATA_CLUSTER_SECRET or --cluster-secret-file; daemon/inspect_http.h).
// A member that published neither is reported unreachable. One section (or one JSON object a
// line) per node.
//
// Exit codes: 0 ok; 1 unreachable or an error (with --all: some member unreachable, the others
// still printed); 2 bad usage; 3 degraded or a problem found (a degraded node, near-duplicate
// namespaces, a prefix that misses because of a namespace or key scheme mismatch, a block whose
// checksum fails, corrupt blocks found by verify, a member that failed the secret handshake or
// runs another version, a failed doctor check).
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <memory>
#include <limits>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "client/channel.h"
#include "command_registry.h"
#include "daemon/inspect_http.h"
#include "ipc/unix_socket.h"
#include "namespace_flags.h"
#include "node/inspect.h"
#include "node/namespace_registry.h"
#include "store/disk_tier.h"
#include "store/disk_tier_reader.h"
#include "strata/engine_keys.h"
#include "strata/result.h"
#include "strata/version.h"
#include "token_file.h"

namespace strata::cli {
namespace {

using nlohmann::json;

constexpr int kDegradedExit = 3;

struct InspectOptions {
  std::string socket;
  std::string data_dir;
  bool json = false;
  bool full = false;
  double watch_s = 0;
  uint32_t watch_count = 0;  // 0: until interrupted
  int timeout_ms = -1;  // --timeout-ms; -1: not given (see CallTimeoutMs)
  // Subcommand arguments.
  std::string command;
  std::string tokens_path;
  NamespaceFlags ns;
  std::string key;
  std::string ls_namespace;
  std::string tier;
  uint32_t limit = 100;
  std::string sort = "namespace";
  bool all = false;
  std::string cluster_secret_file;  // --all: for members on other hosts
  double window_s = 300;
  uint32_t deadline_ms = 1000;
  double recompute_tps = 0;  // 0: unknown
  bool drop = false;          // verify --drop (offline)
};

// ---- Offline view: a stopped (or running) daemon's disk tier, read-only. ----

class OfflineView final : public inspect::View {
 public:
  OfflineView(std::unique_ptr<store::DiskTierReader> reader,
              std::vector<NamespaceRegistry::Entry> namespaces)
      : reader_(std::move(reader)), namespaces_(std::move(namespaces)) {}

  std::string_view source() const override { return "offline"; }
  std::optional<inspect::BlockFacts> Find(const BlockKey& key) override {
    const store::DiskRecord* r = reader_->Find(key);
    if (r == nullptr) return std::nullopt;
    return Facts(*r);
  }
  void ForEach(const std::function<void(const BlockKey&, const inspect::BlockFacts&)>& fn)
      override {
    for (const store::DiskRecord& r : reader_->records()) fn(r.header.key, Facts(r));
  }
  std::vector<std::pair<NamespaceId, NamespaceSpec>> Namespaces() override {
    std::vector<std::pair<NamespaceId, NamespaceSpec>> out;
    for (const auto& e : namespaces_) out.emplace_back(e.id, e.spec);
    return out;
  }
  std::optional<BlockHeader> Header(const BlockKey& key) override {
    const store::DiskRecord* r = reader_->Find(key);
    if (r == nullptr) return std::nullopt;
    return r->header;
  }
  std::optional<bool> Verify(const BlockKey& key) override {
    const store::DiskRecord* r = reader_->Find(key);
    if (r == nullptr) return std::nullopt;
    auto ok = reader_->Verify(*r);
    if (!ok.ok()) return std::nullopt;
    if (!*ok) corrupt_.push_back(key);
    return *ok;
  }
  const store::DiskTierReader& reader() const { return *reader_; }
  // Every key whose check failed so far (verify: all of them, where the JSON lists 1000).
  const std::vector<BlockKey>& corrupt() const { return corrupt_; }

 private:
  static inspect::BlockFacts Facts(const store::DiskRecord& r) {
    inspect::BlockFacts f;
    f.ns = r.header.ns;
    f.bytes = r.header.payload_length;
    f.tiers = inspect::kDiskBit;
    f.pins = 0;
    return f;
  }
  std::unique_ptr<store::DiskTierReader> reader_;
  std::vector<NamespaceRegistry::Entry> namespaces_;
  std::vector<BlockKey> corrupt_;
};

// `verify --drop` offline: removes `keys` from the disk tier at `dir`, opened read-write as the
// daemon opens it (which takes RocksDB's lock: it fails while a daemon holds the directory).
Result<uint64_t> DropOffline(const std::string& dir, const store::DiskTierReader& reader,
                             const std::vector<BlockKey>& keys) {
  store::DiskTierOptions o;
  o.path = dir;
  uint64_t reserved = 0;
  for (const auto& r : reader.records()) reserved += r.reserved_bytes;
  // Room for everything that is there: opening must evict nothing.
  o.capacity_bytes = std::max<uint64_t>({reserved, reader.data_file_bytes(), 1}) * 2;
  o.max_blocks = static_cast<uint32_t>(reader.records().size() * 2 + 1024);
  o.sync = true;
  auto tier = store::DiskTier::Open(o);
  if (!tier.ok() && o.direct_io) {  // filesystems without O_DIRECT (tmpfs)
    o.direct_io = false;
    tier = store::DiskTier::Open(o);
  }
  if (!tier.ok())
    return Status::Unavailable("--drop: cannot open " + dir + " for writing (" +
                               tier.status().ToString() +
                               "); a running daemon holds it: stop it, or run `strata inspect "
                               "verify` against the daemon, which drops corrupt blocks itself");
  uint64_t dropped = 0;
  for (const BlockKey& k : keys) {
    Status st = (*tier)->Erase(k);
    if (st.ok()) ++dropped;
    else if (st.code() != StatusCode::kNotFound) return st.WithContext("--drop " + k.ToHex());
  }
  STRATA_RETURN_IF_ERROR((*tier)->Sync());
  return dropped;
}

// A progress bar on stderr, when stderr is a terminal: "verify [#####.....] 512/1024".
class ProgressBar {
 public:
  explicit ProgressBar(std::string label)
      : label_(std::move(label)), on_(::isatty(STDERR_FILENO) == 1) {}
  ~ProgressBar() {
    if (on_ && drawn_) std::cerr << "\r\033[K" << std::flush;  // leave the line clean
  }
  void Update(size_t done, size_t total) {
    if (!on_ || total == 0) return;
    const auto now = std::chrono::steady_clock::now();
    if (done != total && drawn_ && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    drawn_ = true;
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(kWidth * done / total);
    std::cerr << fmt::format("\r{} [{}{}] {}/{} ({:.0f}%)", label_, std::string(filled, '#'),
                             std::string(kWidth - filled, '.'), done, total,
                             100.0 * double(done) / double(total))
              << std::flush;
  }

 private:
  std::string label_;
  bool on_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_{};
};

json OfflineNode(OfflineView& view, const std::string& dir) {
  const auto& reader = view.reader();
  // used_bytes: what the blocks take in blocks.data (compressed ones at their stored size, 4 KiB
  // extents), as the live node reports it; raw_bytes: what they hold before compression.
  uint64_t used = 0, raw = 0, compressed = 0;
  for (const auto& r : reader.records()) {
    used += r.reserved_bytes;
    raw += r.header.payload_length;
    if (r.compression != store::DiskCompression::kNone) ++compressed;
  }
  json degraded = json::array();
  if (reader.bad_records() > 0)
    degraded.push_back(std::to_string(reader.bad_records()) +
                       " index records fail the checks (the daemon drops them at start)");
  json out = {{"schema_version", inspect::kSchemaVersion},
              {"command", "node"},
              {"source", "offline"},
              {"version", Version()},
              {"uptime_s", nullptr},
              {"build", nullptr},
              {"config", {{"data_dir", dir}}},
              {"health", degraded.empty() ? "ok" : "degraded"},
              {"degraded_reasons", degraded},
              {"warnings", json::array()},
              {"pin_owners", nullptr},
              {"pins", nullptr}};
  out["tiers"]["disk"] = {{"capacity_bytes", nullptr},
                          {"used_bytes", used},
                          {"raw_bytes", raw},
                          {"compressed_blocks", compressed},
                          {"blocks", reader.records().size()},
                          {"file_bytes", reader.data_file_bytes()},
                          {"pinned", nullptr},
                          {"evictions", nullptr},
                          {"evictions_per_second", nullptr},
                          {"fragmentation", nullptr},
                          {"corrupt_dropped", nullptr},
                          {"policy", nullptr}};
  return out;
}

// ---- Building the request. ----

BlockKey ParseKey(const std::string& hex, const char* what) {
  auto k = BlockKey::FromHex(hex);
  if (!k) Fail(std::string(what) + " '" + hex + "': not 32 hex digits", 2);
  return *k;
}

ipc::InspectRequest BuildRequest(const InspectOptions& o) {
  ipc::InspectRequest q;
  q.command = o.command;
  if (o.command == "prefix") {
    if (o.tokens_path != "-" && std::filesystem::is_directory(o.tokens_path))
      Fail("--tokens '" + o.tokens_path + "' is a directory; expected a token file", 2);
    auto tokens = ReadTokenFile(o.tokens_path);
    if (!tokens.ok()) Fail(tokens.status().ToString(), 2);
    Namespace ns = o.ns.Build();
    auto keys = ComputeSchemeKeys(ns, *tokens);
    if (!keys.ok()) Fail(keys.status().ToString(), 2);
    q.ns = ns.id();
    q.spec = ns.spec();
    q.keys = keys->keys;
    q.tokens = std::move(tokens).value();
  } else if (o.command == "key") {
    q.keys.push_back(ParseKey(o.key, "key"));
    q.verify = true;
  } else if (o.command == "ls") {
    if (!o.ls_namespace.empty()) q.ns = ParseKey(o.ls_namespace, "--namespace");
    q.tier = o.tier;
    q.limit = o.limit;
    q.sort = o.sort;
  } else if (o.command == "top") {
    if (!o.ls_namespace.empty()) q.ns = ParseKey(o.ls_namespace, "--namespace");
    q.limit = o.limit;
  } else if (o.command == "funnel") {
    if (!(o.window_s > 0) || !std::isfinite(o.window_s)) Fail("--window: must be positive", 2);
    if (!(o.recompute_tps >= 0) || !std::isfinite(o.recompute_tps))
      Fail("--recompute-tps: must be a positive number", 2);
    q.window_s = o.window_s;
    q.deadline_ms = o.deadline_ms;
    q.recompute_tokens_per_second = o.recompute_tps;
  }
  return q;
}

// ---- Human output. ----

std::string Bytes(const json& v) {
  if (!v.is_number()) return "-";
  double b = v.get<double>();
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = 0;
  while (b >= 1024 && u < 5) {
    b /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} B", b) : fmt::format("{:.1f} {}", b, kUnits[u]);
}

std::string Num(const json& v) {
  if (v.is_null()) return "-";
  if (v.is_number_float()) return fmt::format("{:.1f}", v.get<double>());
  return v.dump();
}

std::string Duration(const json& v) {
  if (!v.is_number()) return "-";
  const uint64_t s = static_cast<uint64_t>(v.get<double>());
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
  if (s < 86400) return fmt::format("{}h{:02}m", s / 3600, (s / 60) % 60);
  return fmt::format("{}d{:02}h", s / 86400, (s / 3600) % 24);
}

std::string Short(const json& v, bool full) {
  if (!v.is_string()) return "-";
  const std::string s = v.get<std::string>();
  return full || s.size() <= 12 ? s : s.substr(0, 12);
}

std::string Tiers(const json& v) {
  std::string out;
  for (const auto& t : v) out += (out.empty() ? "" : ",") + t.get<std::string>();
  return out.empty() ? "-" : out;
}

void PrintNode(const json& j) {
  std::cout << fmt::format("strata {} ({})  uptime {}  health {}\n", j.value("version", "?"),
                           j.value("source", "?"), Duration(j["uptime_s"]),
                           j.value("health", "?"));
  if (j["build"].is_object())
    std::cout << fmt::format("build: cuda {}, ucx {}\n", j["build"]["cuda"] ? "on" : "off",
                             j["build"]["ucx"] ? "on" : "off");
  const json& c = j["config"];
  if (c.is_object() && c.contains("host_pool_bytes"))
    std::cout << fmt::format(
        "config: host pool {}, data dir {}, policy {}, {}, membership {}\n",
        Bytes(c["host_pool_bytes"]), c["data_dir"].is_null() ? "off" : c["data_dir"].dump(),
        c.value("eviction_policy", "?"), c.value("write_through", false) ? "write-through"
                                                                         : "write-back",
        c["membership"].is_null() ? "none" : c["membership"].get<std::string>());
  else if (c.is_object())
    std::cout << fmt::format("data dir {} (no daemon asked)\n", c["data_dir"].dump());
  if (!j["pins"].is_null())
    std::cout << fmt::format("load pins {} (held by {} sessions)\n", Num(j["pins"]),
                             Num(j["pin_owners"]));
  std::cout << fmt::format("{:<8}{:>12}{:>12}{:>10}{:>8}{:>11}{:>9}{:>9}  {}\n", "tier",
                           "capacity", "used", "blocks", "pinned", "evictions", "evict/s",
                           "corrupt", "policy");
  for (const char* t : {"device", "host", "disk"}) {
    if (!j["tiers"].contains(t)) continue;
    const json& x = j["tiers"][t];
    std::cout << fmt::format("{:<8}{:>12}{:>12}{:>10}{:>8}{:>11}{:>9}{:>9}  {}\n", t,
                             Bytes(x["capacity_bytes"]), Bytes(x["used_bytes"]),
                             Num(x["blocks"]), Num(x["pinned"]), Num(x["evictions"]),
                             Num(x["evictions_per_second"]), Num(x["corrupt_dropped"]),
                             x["policy"].is_null() ? "-" : x["policy"].get<std::string>());
  }
  for (const auto& r : j["degraded_reasons"]) std::cout << "degraded: " << r.get<std::string>()
                                                        << "\n";
  for (const auto& r : j["warnings"]) std::cout << "warning: " << r.get<std::string>() << "\n";
}

void PrintNamespaces(const json& j, bool full) {
  std::cout << fmt::format("{:<14}{:<34}{:<18}{:>6}{:>7}{:>14}{:>13}{:>6}{:>9}{:>11}\n",
                           "namespace", "model", "key scheme", "block", "dtype", "layout",
                           "codec", "salt", "blocks", "bytes");
  for (const auto& n : j["namespaces"]) {
    const json& f = n["fingerprint"];
    uint64_t blocks = 0, bytes = 0;
    for (const auto& [t, v] : n["blocks"].items()) blocks += v.get<uint64_t>();
    for (const auto& [t, v] : n["bytes"].items()) bytes += v.get<uint64_t>();
    if (f.is_null()) {
      std::cout << fmt::format("{:<14}{:<34}{:<18}{:>6}{:>7}{:>14}{:>13}{:>6}{:>9}{:>11}\n",
                               Short(n["id"], full), "(not described)", "-", "-", "-", "-", "-",
                               "-", blocks, Bytes(bytes));
      continue;
    }
    std::string scheme = f["key_scheme"].get<std::string>();
    if (!f["hash_seed"].get<std::string>().empty())
      scheme += "/" + f["hash_seed"].get<std::string>();
    std::string model = f["model_id"].get<std::string>();
    if (!f["lora_id"].get<std::string>().empty()) model += "+" + f["lora_id"].get<std::string>();
    std::cout << fmt::format(
        "{:<14}{:<34}{:<18}{:>6}{:>7}{:>14}{:>13}{:>6}{:>9}{:>11}\n", Short(n["id"], full),
        model.size() > 33 ? model.substr(0, 32) + "~" : model, scheme, Num(f["block_size"]),
        f["kv_dtype"].get<std::string>(),
        fmt::format("{}x{}x{}", Num(f["num_layers"]), Num(f["num_kv_heads"]),
                    Num(f["head_dim"])),
        f["codec"].get<std::string>(), f["salt_present"].get<bool>() ? "yes" : "no", blocks,
        Bytes(bytes));
  }
  for (const auto& n : j["namespaces"])
    for (const auto& d : n["near_duplicates"]) {
      if (d["id"].get<std::string>() < n["id"].get<std::string>()) continue;  // each pair once
      std::string diffs;
      for (const auto& x : d["differences"]) diffs += (diffs.empty() ? "" : "; ") +
                                                      x.get<std::string>();
      std::cout << fmt::format("NEAR-DUPLICATE: {} and {} differ only in {}\n",
                               Short(n["id"], full), Short(d["id"], full), diffs);
    }
}

void PrintPrefix(const json& j, bool full) {
  const json& r = j["reach"];
  const json& t = j["reach_tokens"];
  std::cout << fmt::format("namespace {}  tokens {}  block size {}  keyed blocks {}\n",
                           Short(j["namespace"], full), Num(j["tokens"]), Num(j["block_size"]),
                           Num(j["keyed_blocks"]));
  std::cout << "reach (cumulative blocks / tokens):";
  for (const char* k : {"device", "host", "disk", "peers"})
    std::cout << fmt::format("  {} {}/{}", k, Num(r[k]), t.is_object() ? Num(t[k]) : "-");
  std::cout << "\n";
  std::cout << fmt::format("{:>6}  {:<14}{:<18}{:<8}{:>11}{:>7}{:>6}{:>6}\n", "block", "key",
                           "tiers", "holder", "bytes", "age", "hits", "pins");
  for (const auto& b : j["blocks"])
    std::cout << fmt::format("{:>6}  {:<14}{:<18}{:<8}{:>11}{:>7}{:>6}{:>6}\n", Num(b["index"]),
                             Short(b["key"], full), Tiers(b["tiers"]),
                             b["holder"].is_null() ? "-" : b["holder"].get<std::string>(),
                             Bytes(b["bytes"]), Duration(b["age_s"]), Num(b["hits"]),
                             Num(b["pins"]));
  const json& m = j["first_miss"];
  if (m.is_null()) {
    std::cout << "first miss: none (every block is cached)\n";
    return;
  }
  std::cout << fmt::format("first miss: block {} ({}): {}: {}\n", Num(m["index"]),
                           Short(m["key"], full), m["reason"].get<std::string>(),
                           m["detail"].get<std::string>());
  if (m.contains("other_namespace")) {
    const json& o = m["other_namespace"];
    std::cout << fmt::format("  cached under namespace {} ({} tokens), which differs in:\n",
                             Short(o["id"], full), Num(o["reach_tokens"]));
    for (const auto& d : o["differences"]) std::cout << "    " << d.get<std::string>() << "\n";
  }
}

void PrintKey(const json& j, bool full) {
  std::cout << "key " << j["key"].get<std::string>() << "\n";
  if (!j["found"].get<bool>()) {
    std::cout << "not cached";
    if (j.contains("removed") && j["removed"].is_object())
      std::cout << fmt::format(" ({} at unix ms {})", j["removed"]["reason"].get<std::string>(),
                               Num(j["removed"]["at_unix_ms"]));
    std::cout << "\n";
    return;
  }
  const json& h = j["header"];
  if (h.is_object())
    std::cout << fmt::format("namespace {}  codec {}  payload {}  checksum {}\n",
                             Short(h["namespace"], full), h["codec"].get<std::string>(),
                             Bytes(h["payload_length"]), h["checksum"].get<std::string>());
  std::cout << fmt::format("tiers {}  holders {}  pins {}  hits {}  last access {}\n",
                           Tiers(j["tiers"]), Tiers(j["holders"]), Num(j["pins"]),
                           Num(j["hits"]), Num(j["last_access_unix_ms"]));
  const json& v = j["checksum_verified"];
  std::cout << "checksum verified now: "
            << (v.is_null() ? "unknown" : v.get<bool>() ? "ok" : "FAILED") << "\n";
}

void PrintVerify(const json& j, bool full) {
  std::cout << fmt::format("verified {} disk blocks: {} ok, {} corrupt, {} not checked{}\n",
                           Num(j["checked"]), Num(j["ok"]), Num(j["corrupt"]), Num(j["unknown"]),
                           j["corrupt"].get<uint64_t>() == 0 ? std::string()
                           : j["dropped"].get<bool>()
                               ? fmt::format(" ({} corrupt blocks dropped)",
                                             Num(j.value("dropped_blocks", json(nullptr))))
                               : std::string(" (read-only: nothing dropped; --drop removes them)"));
  for (const auto& k : j["corrupt_keys"]) std::cout << "corrupt: " << Short(k, full) << "\n";
}

void PrintLs(const json& j, const InspectOptions& o) {
  const json& rows = j["blocks"];
  const int w = o.full ? 34 : 14;
  std::cout << fmt::format("{:<{}}{:<{}}{:<18}{:>11}{:>6}\n", "key", w, "namespace", w, "tiers",
                           "bytes", "pins");
  for (const json& b : rows)
    std::cout << fmt::format("{:<{}}{:<{}}{:<18}{:>11}{:>6}\n", Short(b["key"], o.full), w,
                             Short(b["namespace"], o.full), w, Tiers(b["tiers"]),
                             Bytes(b["bytes"]), Num(b["pins"]));
  std::cout << fmt::format("{} of {} blocks{}\n", rows.size(), Num(j["total"]),
                           j["truncated"].get<bool>() ? " (--limit reached)" : "");
}

std::string Ms(const json& v) {
  if (!v.is_number()) return "-";
  return fmt::format("{:.2f}", v.get<double>());
}

void PrintPeers(const json& j, bool full) {
  if (!j.value("clustered", false)) {
    std::cout << "not clustered (no membership): no peers\n";
    return;
  }
  std::cout << fmt::format("node {}  membership {}  lease ttl {}  ucx tls {}  listen {}\n",
                           j.value("node_id", "?"), j.value("membership", "?"),
                           j["lease_ttl_s"].is_null() ? "-" : Num(j["lease_ttl_s"]) + "s",
                           j["ucx_tls"].is_null() ? "(UCX default)" : j["ucx_tls"].get<std::string>(),
                           j.value("listen_addr", "?"));
  std::cout << fmt::format("{:<16}{:<14}{:<16}{:>10}{:>10}{:>7}{:>8}{:>11}{:>6}{:>8}{:>9}{:>9}\n",
                           "member", "host", "listen", "lease age", "handshake", "pulls",
                           "blocks", "bytes", "fail", "GB/s", "p50 ms", "p99 ms");
  for (const json& m : j["members"]) {
    std::string id = m["id"].get<std::string>();
    if (m["self"] == true) id += " (self)";
    const json& r = m["recent"];
    const auto rec = [&](const char* k) { return r.is_object() ? r[k] : json(nullptr); };
    std::cout << fmt::format(
        "{:<16}{:<14}{:<16}{:>10}{:>10}{:>7}{:>8}{:>11}{:>6}{:>8}{:>9}{:>9}\n",
        full || id.size() <= 15 ? id : id.substr(0, 14) + "~", m.value("host", "-").substr(0, 13),
        m["listen_addr"].is_null() ? "-" : m["listen_addr"].get<std::string>(),
        Duration(m["lease_age_s"]),
        m["handshake"].is_null() ? "-" : m["handshake"].get<std::string>(), Num(m["pulls"]),
        Num(m["pulled_blocks"]), Bytes(m["pulled_bytes"]), Num(m["pull_failures"]),
        rec("gb_per_s").is_number() ? fmt::format("{:.2f}", rec("gb_per_s").get<double>()) : "-",
        Ms(rec("p50_ms")), Ms(rec("p99_ms")));
  }
  std::cout << "GB/s, p50 and p99: pulls from each member over the last 60 s\n";
}

std::string When(const json& unix_ms) {
  if (!unix_ms.is_number()) return "-";
  const double ago = (std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count() -
                      unix_ms.get<double>()) /
                     1000.0;
  return Duration(std::max(0.0, ago)) + " ago";
}

void PrintTop(const json& j, bool full) {
  if (j["prefixes"].is_null()) {
    std::cout << "hits unknown: " << j.value("detail", "") << "\n";
    return;
  }
  std::cout << fmt::format("{:>4}  {:<14}{:<14}{:<14}{:>7}{:>8}{:>7}  {}\n", "rank", "namespace",
                           "first key", "last key", "blocks", "tokens", "hits", "last access");
  size_t rank = 0;
  for (const json& p : j["prefixes"])
    std::cout << fmt::format("{:>4}  {:<14}{:<14}{:<14}{:>7}{:>8}{:>7}  {}\n", ++rank,
                             Short(p["namespace"], full), Short(p["first_key"], full),
                             Short(p["last_key"], full), Num(p["blocks"]), Num(p["tokens"]),
                             Num(p["hits"]), When(p["last_access_unix_ms"]));
  if (rank == 0) std::cout << "no block has been found by a lookup yet\n";
}

void PrintFunnel(const json& j, bool full) {
  std::cout << fmt::format(
      "window {}{}  deadline {} ms  recompute {}\n", Duration(j["window_s"]),
      j.value("window_covered", true) ? "" : " (partly: the event log wrapped)",
      Num(json(static_cast<int64_t>(j["deadline_s"].get<double>() * 1000))),
      j["recompute_tokens_per_second"].is_null()
          ? std::string("rate unknown (--recompute-tps)")
          : Num(j["recompute_tokens_per_second"]) + " tokens/s (" +
                j["recompute_rate_source"].get<std::string>() + ")");
  std::cout << fmt::format("{:<14}{:>8}{:>8}{:>8}  {:<19}{:>8}{:>9}{:>8}{:>13}\n", "namespace",
                           "lookups", "blocks", "found", "dev/host/disk/peer", "loaded",
                           "in time", "faster", "net benefit");
  for (const json& n : j["namespaces"]) {
    const json& f = n["found"];
    std::cout << fmt::format(
        "{:<14}{:>8}{:>8}{:>8}  {:<19}{:>8}{:>9}{:>8}{:>13}\n", Short(n["namespace"], full),
        Num(n["lookups"]), Num(n["lookup_blocks"]), Num(n["found_blocks"]),
        fmt::format("{}/{}/{}/{}", Num(f["device"]), Num(f["host"]), Num(f["disk"]),
                    Num(f["peers"])),
        Num(n["loaded_blocks"]), Num(n["loaded_before_deadline_blocks"]),
        Num(n["faster_than_recompute_blocks"]),
        n["net_benefit_seconds"].is_number()
            ? fmt::format("{:+.3f} s", n["net_benefit_seconds"].get<double>())
            : "-");
  }
  if (j["namespaces"].empty()) std::cout << "no lookups or loads in the window\n";
}

void PrintDoctor(const json& j) {
  for (const json& c : j["checks"]) {
    std::string st = c["status"].get<std::string>();
    for (char& ch : st) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    std::cout << fmt::format("{:<5} {:<24} {}\n", st, c["name"].get<std::string>(),
                             c["detail"].get<std::string>());
    if (c["fix"].is_string()) std::cout << fmt::format("{:<30} fix: {}\n", "",
                                                       c["fix"].get<std::string>());
  }
  const json& s = j["summary"];
  std::cout << fmt::format("{} pass, {} warn, {} fail, {} skipped\n", Num(s["pass"]),
                           Num(s["warn"]), Num(s["fail"]), Num(s["skip"]));
}

// 3 when the answer shows a problem (see the file comment), else 0.
int ExitCodeOf(const json& j) {
  const std::string c = j.value("command", "");
  if (c == "node" && j.value("health", "ok") != "ok") return kDegradedExit;
  if (c == "namespaces" && j.value("flagged", 0) > 0) return kDegradedExit;
  if (c == "prefix" && j["first_miss"].is_object()) {
    const std::string reason = j["first_miss"].value("reason", "");
    if (reason == "namespace_mismatch" || reason == "key_scheme_mismatch") return kDegradedExit;
  }
  if (c == "key" && j.contains("checksum_verified") && j["checksum_verified"] == false)
    return kDegradedExit;
  if (c == "verify" && j.value("corrupt", 0) > 0) return kDegradedExit;
  if (c == "peers" && j.contains("members"))
    for (const json& m : j["members"]) {
      if (m.value("handshake", json(nullptr)) == "rejected") return kDegradedExit;
      if (m["version"].is_string() && m["version"] != Version()) return kDegradedExit;
    }
  if (c == "doctor" && j.contains("summary") && j["summary"].value("fail", 0) > 0)
    return kDegradedExit;
  return 0;
}

// ---- Running. ----

// How long one answer may take: --timeout-ms when given; else 10 s, except a live `verify`, which
// reads every disk block on the daemon (minutes for a large tier) and waits as long as that takes
// (a terminal shows the seconds; Ctrl-C stops it). 0: no bound.
int CallTimeoutMs(const InspectOptions& o, const std::string& command) {
  if (o.timeout_ms >= 0) return o.timeout_ms;
  return command == "verify" ? 0 : 10000;
}

// One answer: from the daemon, or from the disk tier when --data-dir is given.
class Source {
 public:
  explicit Source(const InspectOptions& o) : o_(o) {}

  // `socket`: another daemon's than the options' (--all); "" for the options' own.
  explicit Source(const InspectOptions& o, std::string socket) : o_(o), socket_(std::move(socket)) {}

  // A daemon on another host, through its inspect endpoint (--all).
  Source(const InspectOptions& o, std::string inspect_addr, std::string secret)
      : o_(o), http_(std::make_unique<InspectHttpClient>(std::move(inspect_addr),
                                                         std::move(secret),
                                                         CallTimeoutMs(o, o.command))) {}

  json Ask(const ipc::InspectRequest& q) {
    auto r = TryAsk(q);
    if (!r.ok()) Fail(r.status().message());
    return std::move(r).value();
  }

  // As Ask, the failure as a status (--all goes on with the other members).
  Result<json> TryAsk(const ipc::InspectRequest& q) {
    if (!o_.data_dir.empty()) return AskOffline(q);
    if (http_) {
      auto r = http_->Ask(q);
      if (!r.ok()) return r.status();
      return json::parse(*r);
    }
    if (!channel_) {
      std::string path = !socket_.empty() ? socket_
                         : o_.socket.empty() ? ipc::DefaultSocketPath() : o_.socket;
      auto ch = SocketChannel::Open(path, CallTimeoutMs(o_, q.command), 4096);
      if (!ch.ok())
        return Status::Unavailable("cannot reach the daemon at " + path + ": " +
                                   ch.status().ToString());
      channel_ = std::move(ch).value();
    }
    // A live verify reads every disk block on the daemon: on a terminal, say so while it runs.
    std::optional<std::jthread> ticker;
    if (q.command == "verify" && ::isatty(STDERR_FILENO) == 1)
      ticker.emplace([](std::stop_token stop) {
        const auto began = std::chrono::steady_clock::now();
        while (!stop.stop_requested()) {
          std::cerr << fmt::format(
                           "\rverify: the daemon is checking its disk blocks... {:.0f} s",
                           std::chrono::duration<double>(std::chrono::steady_clock::now() - began)
                               .count())
                    << std::flush;
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
        }
        std::cerr << "\r\033[K" << std::flush;
      });
    auto reply = channel_->Call(q);
    ticker.reset();
    if (!reply.ok()) {
      if (reply.status().code() == StatusCode::kInvalidArgument &&
          std::string(reply.status().message()).find("unknown") != std::string::npos)
        return Status::Unavailable("the daemon does not answer inspect " + q.command +
                                   " (a version before it): " + reply.status().ToString());
      return Status::Unavailable("inspect " + q.command + ": " + reply.status().ToString());
    }
    auto* r = std::get_if<ipc::InspectReply>(&*reply);
    if (r == nullptr) return Status::Unavailable("inspect: the daemon answered with another reply type");
    return json::parse(r->json);
  }

 private:
  json AskOffline(const ipc::InspectRequest& q) {
    if (!view_) {
      auto reader = store::DiskTierReader::Open(o_.data_dir);
      if (!reader.ok()) Fail("--data-dir: " + reader.status().ToString());
      auto entries = NamespaceRegistry::ReadFile(o_.data_dir + "/namespaces.json");
      view_ = std::make_unique<OfflineView>(
          std::move(reader).value(),
          entries.ok() ? std::move(entries).value() : std::vector<NamespaceRegistry::Entry>{});
    }
    if (q.command == "node") return OfflineNode(*view_, o_.data_dir);
    if (q.command == "peers" || q.command == "funnel" || q.command == "doctor")
      Fail("inspect " + q.command + " asks a running daemon; --data-dir has no " +
           (q.command == "peers" ? "cluster" : q.command == "funnel" ? "request log"
                                                                     : "limits to check"));
    std::optional<ProgressBar> bar;
    inspect::Progress progress;
    if (q.command == "verify") {
      bar.emplace("verify " + o_.data_dir);
      progress = [&bar](size_t done, size_t total) { bar->Update(done, total); };
    }
    auto out = inspect::Run(*view_, q, /*admin=*/true, progress);
    bar.reset();
    if (!out.ok()) Fail("inspect " + q.command + ": " + out.status().ToString());
    json j = json::parse(*out);
    if (q.command == "verify" && o_.drop && !view_->corrupt().empty()) {
      auto dropped = DropOffline(o_.data_dir, view_->reader(), view_->corrupt());
      if (!dropped.ok()) Fail(dropped.status().ToString());
      j["dropped"] = true;
      j["dropped_blocks"] = *dropped;
    }
    return j;
  }

  const InspectOptions& o_;
  std::string socket_;
  std::unique_ptr<SocketChannel> channel_;
  std::unique_ptr<InspectHttpClient> http_;
  std::unique_ptr<OfflineView> view_;
};

void Print(const json& j, const InspectOptions& o) {
  if (o.json) {
    std::cout << j.dump() << std::endl;
    return;
  }
  if (o.command == "node") PrintNode(j);
  else if (o.command == "namespaces") PrintNamespaces(j, o.full);
  else if (o.command == "prefix") PrintPrefix(j, o.full);
  else if (o.command == "key") PrintKey(j, o.full);
  else if (o.command == "ls") PrintLs(j, o);
  else if (o.command == "verify") PrintVerify(j, o.full);
  else if (o.command == "peers") PrintPeers(j, o.full);
  else if (o.command == "top") PrintTop(j, o.full);
  else if (o.command == "funnel") PrintFunnel(j, o.full);
  else if (o.command == "doctor") PrintDoctor(j);
  std::cout << std::flush;
}

// Per-second eviction rates of `now` from the previous `node` answer.
void AddRates(json& now, const json& before, double seconds) {
  if (seconds <= 0 || !before.is_object()) return;
  for (auto& [tier, t] : now["tiers"].items()) {
    const json& b = before["tiers"].value(tier, json(nullptr));
    if (!b.is_object() || !t["evictions"].is_number() || !b["evictions"].is_number()) continue;
    t["evictions_per_second"] =
        (t["evictions"].get<double>() - b["evictions"].get<double>()) / seconds;
  }
}

// One member of the cluster as --all reaches it.
struct Target {
  std::string id;
  std::string socket;       // "" when it is not asked through a socket
  std::string inspect_addr; // asked over HTTP (another host) when not ""
  std::string unreachable;  // why, when socket is ""
  std::unique_ptr<Source> source;
  std::string self_socket;  // the local daemon's published socket (shown only)
};

// The members of the local daemon's cluster (itself alone when it is not clustered).
std::vector<Target> Members(const InspectOptions& o, Source& local) {
  ipc::InspectRequest q;
  q.command = "peers";
  const json peers = local.Ask(q);
  std::vector<Target> out;
  std::optional<Result<std::string>> secret;  // loaded once, for the first member on another host
  if (!peers.value("clustered", false)) {
    out.push_back({"local", "", "", "", nullptr, ""});
    return out;
  }
  for (const json& m : peers["members"]) {
    Target t;
    t.id = m["id"].get<std::string>();
    if (m["self"] == true) {
      if (m["socket"].is_string()) t.self_socket = m["socket"].get<std::string>();
      out.push_back(std::move(t));  // asked through the local source
      continue;
    }
    const bool has_http = m.contains("inspect_addr") && m["inspect_addr"].is_string();
    if (m["socket"].is_string() && m["same_host"] == true) {
      t.socket = m["socket"].get<std::string>();
      t.source = std::make_unique<Source>(o, t.socket);
    } else if (has_http) {
      t.inspect_addr = m["inspect_addr"].get<std::string>();
      if (!secret) secret = LoadInspectSecret("", o.cluster_secret_file);
      if (secret->ok())
        t.source = std::make_unique<Source>(o, t.inspect_addr, **secret);
      else
        t.unreachable = "it runs on host " + m.value("host", std::string("?")) +
                        " (inspect endpoint " + t.inspect_addr +
                        "), which needs the cluster secret: " + (*secret).status().ToString();
    } else if (!m["socket"].is_string()) {
      t.unreachable = "it published neither a socket nor an inspect endpoint in membership";
    } else {
      t.unreachable = "it runs on host " + m.value("host", std::string("?")) +
                      " and publishes no inspect endpoint (strata serve --inspect-addr): run "
                      "`strata inspect --socket " + m["socket"].get<std::string>() + "` there";
    }
    out.push_back(std::move(t));
  }
  return out;
}

int64_t UnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The doctor's clock check from a node's answer: its clock against this host's, measured at the
// middle of the request (uncertainty: half the round trip).
void AddClockSkew(json& answer, int64_t sent_ms, int64_t received_ms) {
  if (!answer.contains("checks") || !answer["now_unix_ms"].is_number()) return;
  const double mid = (double(sent_ms) + double(received_ms)) / 2;
  const double skew = answer["now_unix_ms"].get<double>() - mid;
  const double bound = double(received_ms - sent_ms) / 2;
  const double a = std::fabs(skew);
  const char* status = a > 1000 + bound ? "fail" : a > 100 + bound ? "warn" : "pass";
  for (json& c : answer["checks"]) {
    if (c["name"] != "clock_skew") continue;
    json& s = answer["summary"];
    s[c["status"].get<std::string>()] = s[c["status"].get<std::string>()].get<int>() - 1;
    s[status] = s[status].get<int>() + 1;
    c["status"] = status;
    c["detail"] = fmt::format("clock {:+.0f} ms from this host's (+/- {:.0f} ms)", skew, bound);
    c["fix"] = std::string(status) == "pass"
                   ? json(nullptr)
                   : json("synchronise clocks (chrony or systemd-timesyncd against the same "
                          "NTP servers); removal times and ages compare across nodes");
    c["skew_ms"] = skew;
  }
}

void RunAll(const InspectOptions& o, const ipc::InspectRequest& q) {
  if (!o.data_dir.empty()) Fail("--all asks the cluster's daemons; it excludes --data-dir", 2);
  if (o.watch_s > 0) Fail("--all and --watch exclude each other", 2);
  Source local(o);
  std::vector<Target> targets = Members(o, local);
  bool unreachable = false, degraded = false;
  for (Target& t : targets) {
    Source* src = t.id == "local" || (t.source == nullptr && t.unreachable.empty())
                      ? &local : t.source.get();
    const std::string& socket = t.socket.empty() ? t.self_socket : t.socket;
    const std::string shown = !t.inspect_addr.empty() ? "inspect endpoint " + t.inspect_addr
                                                      : socket;
    json node = {{"id", t.id},
                 {"socket", socket.empty() ? json(nullptr) : json(socket)},
                 {"inspect_addr", t.inspect_addr.empty() ? json(nullptr) : json(t.inspect_addr)},
                 {"via", t.inspect_addr.empty() ? "socket" : "http"}};
    json answer;
    std::string error = t.unreachable;
    if (src != nullptr) {
      const int64_t sent = UnixMs();
      auto r = src->TryAsk(q);
      const int64_t received = UnixMs();
      if (r.ok()) {
        answer = std::move(r).value();
        if (o.command == "doctor") AddClockSkew(answer, sent, received);
      } else {
        error = std::string(r.status().message());
      }
    }
    node["reachable"] = error.empty();
    if (!error.empty()) {
      unreachable = true;
      node["error"] = error;
      answer = {{"schema_version", inspect::kSchemaVersion}, {"command", o.command}};
    }
    answer["node"] = node;
    if (error.empty() && ExitCodeOf(answer) == kDegradedExit) degraded = true;
    if (o.json) {
      std::cout << answer.dump() << std::endl;
      continue;
    }
    std::cout << fmt::format("=== node {}{} ===\n", t.id,
                             shown.empty() ? "" : " (" + shown + ")");
    if (!error.empty()) std::cout << "unreachable: " << error << "\n";
    else Print(answer, o);
    std::cout << std::flush;
  }
  if (unreachable) throw CLI::RuntimeError(1);
  if (degraded) throw CLI::RuntimeError(kDegradedExit);
}

void RunInspect(const InspectOptions& o) {
  if (!o.socket.empty() && !o.data_dir.empty())
    Fail("--socket and --data-dir exclude each other (live or offline)", 2);
  if (o.all) {
    RunAll(o, BuildRequest(o));
    return;
  }
  if (o.watch_s < 0 || !std::isfinite(o.watch_s)) Fail("--watch: must be a positive number", 2);
  const ipc::InspectRequest q = BuildRequest(o);
  Source source(o);
  const bool tty = ::isatty(STDOUT_FILENO) == 1;
  json previous;
  auto previous_at = std::chrono::steady_clock::now();
  int code = 0;
  for (uint32_t round = 0;; ++round) {
    json j = source.Ask(q);
    const auto now = std::chrono::steady_clock::now();
    if (o.command == "node")
      AddRates(j, previous, std::chrono::duration<double>(now - previous_at).count());
    previous = j;
    previous_at = now;
    if (o.watch_s > 0 && tty && !o.json) std::cout << "\033[H\033[2J";
    Print(j, o);
    code = ExitCodeOf(j);
    if (o.watch_s <= 0 || (o.watch_count > 0 && round + 1 >= o.watch_count)) break;
    std::this_thread::sleep_for(std::chrono::duration<double>(o.watch_s));
  }
  if (code != 0) throw CLI::RuntimeError(code);
}

[[maybe_unused]] const bool kRegistered = RegisterCommand("", [](CLI::App& parent) {
  auto o = std::make_shared<InspectOptions>();
  auto* cmd = parent.add_subcommand(
      "inspect", "What a node caches, and why a prefix misses (live, or offline with --data-dir)");
  cmd->require_subcommand(1);
  cmd->fallthrough();
  cmd->add_option("--socket", o->socket, "The daemon's socket (default: the daemon's default)");
  cmd->add_option("--data-dir", o->data_dir,
                  "Inspect a disk tier directory, not a daemon (read-only; no daemon needed)");
  cmd->add_flag("--json", o->json, "One JSON object per answer (schema_version, null = unknown)");
  cmd->add_flag("--full", o->full, "Whole keys and namespace ids instead of 12 hex digits");
  cmd->add_option("--watch", o->watch_s, "Refresh every SECONDS until interrupted");
  cmd->add_option("--watch-count", o->watch_count, "With --watch: stop after N refreshes");
  cmd->add_option("--timeout-ms", o->timeout_ms, "Longest wait for one answer of the daemon (default 10000; a live verify "
                  "waits until the daemon has checked every block)")
      ->check(CLI::Range(0, std::numeric_limits<int>::max()));
  cmd->add_flag("--all", o->all,
                "Every member of the daemon's cluster (on this host through the socket each "
                "publishes in membership, on other hosts through its inspect endpoint), one "
                "section or JSON line per node");
  cmd->add_option("--cluster-secret-file", o->cluster_secret_file,
                  "With --all: the cluster secret, for members on other hosts (default: "
                  "$STRATA_CLUSTER_SECRET)");

  auto sub = [&](const char* name, const char* help) {
    auto* s = cmd->add_subcommand(name, help);
    s->callback([o, name] {
      o->command = name;
      RunInspect(*o);
    });
    return s;
  };
  sub("node", "Version, configuration, uptime, health and per-tier usage");
  sub("namespaces", "Every namespace with its fingerprint, blocks and bytes; near-duplicates");
  auto* prefix = sub("prefix", "How far a token prefix reaches in each tier, and why it misses");
  prefix->add_option("--tokens", o->tokens_path, "Token file ('-' for stdin)")->required();
  o->ns.AddTo(*prefix);
  auto* key = sub("key", "One block: header, tiers, pins, checksum verified now");
  key->add_option("KEY", o->key, "Block key (32 hex digits)")->required();
  auto* ls = sub("ls", "Cached blocks, filtered and sorted");
  ls->add_option("--namespace", o->ls_namespace, "Only this namespace (32 hex digits)");
  ls->add_option("--tier", o->tier, "Only blocks in this tier: device, host or disk")
      ->check(CLI::IsMember({"device", "host", "disk"}));
  ls->add_option("--limit", o->limit, "At most this many blocks (default 100)");
  ls->add_option("--sort", o->sort, "namespace (default), key or bytes")
      ->check(CLI::IsMember({"namespace", "key", "bytes"}));
  auto* verify = sub("verify",
                     "Check every disk block's checksum now, with a progress bar on a terminal "
                     "(live: corrupt blocks are dropped, as a load would)");
  verify->add_flag("--drop", o->drop,
                   "With --data-dir: remove the corrupt blocks (the directory must not be in use "
                   "by a daemon)");
  sub("peers", "Cluster members: lease age, address, transport, pulls (GB/s, p50/p99, failures)");
  auto* top = sub("top", "The hottest prefixes: chains with the most lookup hits");
  top->add_option("--namespace", o->ls_namespace, "Only this namespace (32 hex digits)");
  top->add_option("--limit", o->limit, "At most this many prefixes (default 100)");
  auto* funnel = sub("funnel",
                     "Per namespace over a window: lookups -> found -> loaded -> in time -> "
                     "faster than recomputing, and the net benefit");
  funnel->add_option("--window", o->window_s, "Seconds back from now (default 300)");
  funnel->add_option("--deadline-ms", o->deadline_ms,
                     "A load slower than this did not help the engine (default 1000)");
  funnel->add_option("--recompute-tps", o->recompute_tps,
                     "The engine's prefill rate in tokens per second (default: unknown)");
  sub("doctor", "Set-up checks (pass/warn/fail) with the exact fix");
});

}  // namespace
}  // namespace strata::cli
