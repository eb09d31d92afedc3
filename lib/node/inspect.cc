#include "node/inspect.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>

#include <nlohmann/json.hpp>

#include "node/namespace_registry.h"
#include "strata/engine_keys.h"

namespace strata::inspect {
namespace {

using nlohmann::json;

json TiersJson(uint8_t bits) {
  json out = json::array();
  if (bits & kDeviceBit) out.push_back("device");
  if (bits & kHostBit) out.push_back("host");
  if (bits & kDiskBit) out.push_back("disk");
  return out;
}

json SpecObject(const NamespaceSpec& s) {
  return {{"model_id", s.model_id},
          {"model_revision", s.model_revision},
          {"key_scheme", KeySchemeName(s.key_scheme)},
          {"hash_seed", s.hash_seed},
          {"block_size", s.block_size},
          {"kv_dtype", KvDtypeName(s.kv_dtype)},
          {"attention", s.attention == AttentionKind::kMla ? "mla" : "kv"},
          {"num_layers", s.num_layers},
          {"num_kv_heads", s.num_kv_heads},
          {"head_dim", s.head_dim},
          {"codec", CodecName(s.codec)},
          {"lora_id", s.lora_id},
          {"salt_present", !s.tenant_salt.empty()}};
}

std::string Hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Age in seconds of a block stored at `stored_unix_ms` (null when unknown).
json AgeOf(const std::optional<Activity>& a) {
  if (!a || a->stored_unix_ms == 0) return nullptr;
  return std::max<double>(0, double(NowMs() - a->stored_unix_ms) / 1000.0);
}

json Header(uint64_t schema, std::string_view command, const View& view) {
  return {{"schema_version", schema}, {"command", command}, {"source", view.source()}};
}

// Differences in the key scheme and its seed only: the same model and layout keyed another way.
bool OnlyKeyScheme(const std::vector<std::string>& diffs) {
  return !diffs.empty() && std::all_of(diffs.begin(), diffs.end(), [](const std::string& d) {
    return d.rfind("key_scheme", 0) == 0 || d.rfind("hash_seed", 0) == 0;
  });
}

json Namespaces(View& view) {
  struct Usage {
    uint64_t blocks[3] = {0, 0, 0};
    uint64_t bytes[3] = {0, 0, 0};
  };
  std::map<NamespaceId, Usage> usage;
  view.ForEach([&](const BlockKey&, const BlockFacts& f) {
    Usage& u = usage[f.ns];
    const uint8_t bits[3] = {kDeviceBit, kHostBit, kDiskBit};
    for (int i = 0; i < 3; ++i)
      if (f.tiers & bits[i]) {
        ++u.blocks[i];
        u.bytes[i] += f.bytes;
      }
  });
  const auto described = view.Namespaces();
  std::map<NamespaceId, const NamespaceSpec*> specs;
  for (const auto& [id, spec] : described) {
    specs[id] = &spec;
    usage.try_emplace(id);
  }
  json out = json::array();
  size_t flagged = 0;
  for (const auto& [id, u] : usage) {
    json n = {{"id", id.ToHex()}};
    auto it = specs.find(id);
    n["described"] = it != specs.end();
    n["fingerprint"] = it != specs.end() ? SpecObject(*it->second) : json(nullptr);
    const char* names[3] = {"device", "host", "disk"};
    json blocks = json::object(), bytes = json::object();
    for (int i = 0; i < 3; ++i) {
      blocks[names[i]] = u.blocks[i];
      bytes[names[i]] = u.bytes[i];
    }
    n["blocks"] = blocks;
    n["bytes"] = bytes;
    json near = json::array();
    if (it != specs.end()) {
      for (const auto& [other, spec] : described) {
        if (other == id) continue;
        const auto diffs = RedactedDifferences(*it->second, spec);
        if (diffs.size() == 1 || OnlyKeyScheme(diffs))
          near.push_back({{"id", other.ToHex()}, {"differences", diffs}});
      }
    }
    if (!near.empty()) ++flagged;
    n["near_duplicates"] = near;
    out.push_back(std::move(n));
  }
  return {{"namespaces", out}, {"flagged", flagged}};
}

// Leading blocks of `keys` (of namespace `ns`) whose tiers satisfy `mask`.
size_t Reach(const std::vector<std::optional<BlockFacts>>& facts, uint8_t mask) {
  size_t n = 0;
  while (n < facts.size() && facts[n] && (facts[n]->tiers & mask)) ++n;
  return n;
}

Result<json> Prefix(View& view, const ipc::InspectRequest& q, bool admin) {
  if (!q.ns) return Status::InvalidArgument("inspect prefix: name the namespace");
  const uint32_t block_size = q.spec ? q.spec->block_size : 0;
  std::vector<std::optional<BlockFacts>> facts;
  facts.reserve(q.keys.size());
  bool other_namespace = false;  // the first unusable block is held under another namespace
  for (const BlockKey& k : q.keys) {
    auto f = view.Find(k);
    if (f && f->ns != *q.ns) {
      if (facts.size() == Reach(facts, kDeviceBit | kHostBit | kDiskBit) && admin)
        other_namespace = true;
      f.reset();
    }
    facts.push_back(f);
  }
  const size_t device = Reach(facts, kDeviceBit);
  const size_t host = Reach(facts, kDeviceBit | kHostBit);
  const size_t disk = Reach(facts, kDeviceBit | kHostBit | kDiskBit);
  size_t reach = disk;
  json remote = nullptr;
  if (view.clustered()) {
    reach = disk + view.RemotePrefix(std::span(q.keys).subspan(disk));
    remote = reach;
  }
  json out;
  out["namespace"] = q.ns->ToHex();
  out["block_size"] = block_size ? json(block_size) : json(nullptr);
  out["tokens"] = q.tokens.empty() ? json(nullptr) : json(q.tokens.size());
  out["keyed_blocks"] = q.keys.size();
  out["reach"] = {{"device", device}, {"host", host}, {"disk", disk}, {"peers", remote}};
  if (block_size) {
    auto tok = [&](json blocks) {
      return blocks.is_null() ? json(nullptr) : json(blocks.get<uint64_t>() * block_size);
    };
    out["reach_tokens"] = {{"device", tok(device)}, {"host", tok(host)}, {"disk", tok(disk)},
                           {"peers", tok(remote)}};
  } else {
    out["reach_tokens"] = nullptr;
  }
  json blocks = json::array();
  for (size_t i = 0; i < q.keys.size(); ++i) {
    const auto& f = facts[i];
    json b = {{"index", i}, {"key", q.keys[i].ToHex()}};
    b["tiers"] = TiersJson(f ? f->tiers : 0);
    if (f) b["holder"] = "local";
    else if (i < reach) b["holder"] = "peer";
    else b["holder"] = nullptr;
    b["bytes"] = f ? json(f->bytes) : json(nullptr);
    const std::optional<Activity> act = f ? view.ActivityOf(q.keys[i]) : std::nullopt;
    b["age_s"] = AgeOf(act);
    b["hits"] = act ? json(act->hits) : json(nullptr);
    b["pins"] = f ? json(f->pins) : json(nullptr);
    blocks.push_back(std::move(b));
  }
  out["blocks"] = std::move(blocks);

  json miss = nullptr;
  const size_t tail =
      block_size && q.tokens.size() >= q.keys.size() * block_size
          ? q.tokens.size() - q.keys.size() * block_size : 0;
  if (reach < q.keys.size()) {
    miss = {{"index", reach}, {"key", q.keys[reach].ToHex()}};
    if (other_namespace && reach == disk) {
      miss["reason"] = "other_namespace";
      miss["detail"] = "the key is cached, but its block belongs to another namespace";
    } else if (auto begun = view.InFlightSince(q.keys[reach])) {
      miss["reason"] = "in_flight";
      miss["since_unix_ms"] = *begun;
      miss["detail"] = "a store of this block has begun and is not committed yet";
    } else if (auto removed = view.Removed(q.keys[reach])) {
      miss["reason"] = removed->reason;
      miss["at_unix_ms"] = removed->unix_ms;
      miss["detail"] = removed->reason == "cleared" ? "erased by a Clear"
                                                    : "evicted; no tier holds it now";
    } else {
      miss["reason"] = "absent";
      miss["detail"] = "never stored on this node, or evicted before the node's removal log";
    }
    // The classic zero-hit cause: the same tokens cached under a namespace that differs.
    if (admin && q.spec && !q.tokens.empty() && miss["reason"] == "absent") {
      const uint64_t our_tokens = uint64_t{reach} * block_size;
      for (const auto& [id, spec] : view.Namespaces()) {
        if (id == *q.ns) continue;
        auto other = Namespace::Create(spec);
        if (!other.ok()) continue;
        auto keys = ComputeSchemeKeys(*other, q.tokens);
        if (!keys.ok()) continue;
        size_t n = 0;
        while (n < keys->keys.size()) {
          auto f = view.Find(keys->keys[n]);
          if (!f || f->ns != id) break;
          ++n;
        }
        if (n == 0 || uint64_t{n} * spec.block_size <= our_tokens) continue;
        const auto diffs = RedactedDifferences(*q.spec, spec);
        miss["reason"] = OnlyKeyScheme(diffs) ? "key_scheme_mismatch" : "namespace_mismatch";
        miss["detail"] = "these tokens are cached under another namespace";
        miss["other_namespace"] = {{"id", id.ToHex()},
                                   {"reach_tokens", uint64_t{n} * spec.block_size},
                                   {"differences", diffs}};
        break;
      }
    }
  } else if (tail > 0) {
    miss = {{"index", q.keys.size()}, {"key", nullptr}, {"reason", "partial_block"},
            {"detail", std::to_string(tail) + " tokens after the last full block of " +
                           std::to_string(block_size) + " are never keyed"}};
  }
  out["first_miss"] = miss;
  return out;
}

Result<json> Key(View& view, const ipc::InspectRequest& q, bool admin) {
  if (q.keys.size() != 1) return Status::InvalidArgument("inspect key: give one key");
  const BlockKey& key = q.keys[0];
  auto f = view.Find(key);
  if (f && !admin && (!q.ns || f->ns != *q.ns)) f.reset();
  json out = {{"key", key.ToHex()}, {"found", f.has_value()}};
  if (!f) {
    auto removed = admin ? view.Removed(key) : std::nullopt;
    out["removed"] = removed ? json{{"reason", removed->reason}, {"at_unix_ms", removed->unix_ms}}
                             : json(nullptr);
    return out;
  }
  out["tiers"] = TiersJson(f->tiers);
  out["holders"] = json::array({"local"});
  out["pins"] = f->pins;
  const std::optional<Activity> act = view.ActivityOf(key);
  out["last_access_unix_ms"] =
      act && act->last_access_unix_ms ? json(act->last_access_unix_ms) : json(nullptr);
  out["hits"] = act ? json(act->hits) : json(nullptr);
  out["age_s"] = AgeOf(act);
  if (auto h = view.Header(key)) {
    out["header"] = {{"namespace", h->ns.ToHex()},
                     {"codec", CodecName(h->codec)},
                     {"payload_length", h->payload_length},
                     {"checksum", Hex64(h->payload_checksum)}};
  } else {
    out["header"] = nullptr;
  }
  out["fingerprint"] = nullptr;
  for (const auto& [id, s] : view.Namespaces())
    if (id == f->ns) out["fingerprint"] = SpecObject(s);
  const std::optional<bool> ok = q.verify ? view.Verify(key) : std::nullopt;
  out["checksum_verified"] = ok ? json(*ok) : json(nullptr);
  return out;
}

Result<json> Ls(View& view, const ipc::InspectRequest& q, bool admin) {
  uint8_t mask = kDeviceBit | kHostBit | kDiskBit;
  if (q.tier == "device") mask = kDeviceBit;
  else if (q.tier == "host") mask = kHostBit;
  else if (q.tier == "disk") mask = kDiskBit;
  else if (!q.tier.empty())
    return Status::InvalidArgument("inspect ls: tier '" + q.tier +
                                   "' is not device, host or disk");
  std::vector<std::pair<BlockKey, BlockFacts>> rows;
  view.ForEach([&](const BlockKey& k, const BlockFacts& f) {
    if (q.ns && f.ns != *q.ns) return;
    if (!(f.tiers & mask)) return;
    rows.emplace_back(k, f);
  });
  if (!q.sort.empty() && q.sort != "namespace" && q.sort != "key" && q.sort != "bytes")
    return Status::InvalidArgument("inspect ls: sort '" + q.sort +
                                   "' is not namespace, key or bytes");
  std::sort(rows.begin(), rows.end(), [&](const auto& a, const auto& b) {
    if (q.sort == "bytes" && a.second.bytes != b.second.bytes)
      return a.second.bytes > b.second.bytes;
    if (q.sort != "key" && a.second.ns != b.second.ns) return a.second.ns < b.second.ns;
    return a.first < b.first;
  });
  const size_t limit = q.limit ? q.limit : 1000;
  json blocks = json::array();
  for (size_t i = 0; i < rows.size() && i < limit; ++i) {
    const auto& [k, f] = rows[i];
    blocks.push_back({{"key", k.ToHex()},
                      {"namespace", f.ns.ToHex()},
                      {"tiers", TiersJson(f.tiers)},
                      {"bytes", f.bytes},
                      {"pins", f.pins},
                      {"age_s", AgeOf(view.ActivityOf(k))}});
  }
  return json{{"total", rows.size()}, {"truncated", rows.size() > limit},
              {"blocks", std::move(blocks)}};
}

// Every disk block's checksum, checked now.
json VerifyAll(View& view, const Progress& progress) {
  std::vector<BlockKey> keys;
  view.ForEach([&](const BlockKey& k, const BlockFacts& f) {
    if (f.tiers & kDiskBit) keys.push_back(k);
  });
  std::sort(keys.begin(), keys.end());
  uint64_t ok = 0, corrupt = 0, unknown = 0;
  json bad = json::array();
  size_t done = 0;
  for (const BlockKey& k : keys) {
    if (progress) progress(done++, keys.size());
    const std::optional<bool> r = view.VerifyDisk(k);
    if (!r) {
      ++unknown;
    } else if (*r) {
      ++ok;
    } else {
      ++corrupt;
      if (bad.size() < 1000) bad.push_back(k.ToHex());
    }
  }
  if (progress) progress(keys.size(), keys.size());
  // dropped: whether the corrupt blocks were removed (live: as a load would; offline: only
  // with `verify --drop`, which the CLI applies after this answer).
  return {{"checked", keys.size()},
          {"ok", ok},
          {"corrupt", corrupt},
          {"unknown", unknown},
          {"corrupt_keys", bad},
          {"dropped", view.drops_corrupt()},
          {"dropped_blocks", view.drops_corrupt() ? corrupt : 0}};
}

// The hottest prefixes: chains with the most lookup hits (node/block_activity.h).
json Top(View& view, const ipc::InspectRequest& q) {
  const size_t limit = q.limit ? q.limit : 20;
  auto top = view.Top(limit, q.ns);
  if (!top) return {{"prefixes", nullptr}, {"detail", "hits are counted by a running daemon"}};
  std::map<NamespaceId, uint32_t> block_size;
  for (const auto& [id, spec] : view.Namespaces()) block_size[id] = spec.block_size;
  json out = json::array();
  for (const HotPrefix& p : *top) {
    auto bs = block_size.find(p.ns);
    out.push_back({{"namespace", p.ns.ToHex()},
                   {"first_key", p.first.ToHex()},
                   {"last_key", p.last.ToHex()},
                   {"blocks", p.depth},
                   {"tokens", bs == block_size.end() ? json(nullptr)
                                                     : json(uint64_t{p.depth} * bs->second)},
                   {"hits", p.hits},
                   {"last_access_unix_ms",
                    p.last_access_unix_ms ? json(p.last_access_unix_ms) : json(nullptr)}});
  }
  return {{"prefixes", out}};
}

}  // namespace

std::string SpecJson(const NamespaceSpec& spec) { return SpecObject(spec).dump(); }

Result<std::string> Run(View& view, const ipc::InspectRequest& q, bool admin,
                        const Progress& progress) {
  const bool node_wide = q.command == "namespaces" || q.command == "verify" ||
                         (q.command == "ls" && !q.ns) ||
                         (q.command == "key" && !q.ns) || (q.command == "top" && !q.ns);
  if (!admin && node_wide)
    return Status::PermissionDenied("inspect " + q.command +
                                    ": node-wide views are for admin users; name a namespace");
  Result<json> body = Status::InvalidArgument("inspect: unknown command '" + q.command + "'");
  if (q.command == "namespaces") body = Namespaces(view);
  else if (q.command == "prefix") body = Prefix(view, q, admin);
  else if (q.command == "key") body = Key(view, q, admin);
  else if (q.command == "ls") body = Ls(view, q, admin);
  else if (q.command == "verify") body = VerifyAll(view, progress);
  else if (q.command == "top") body = Top(view, q);
  if (!body.ok()) return body.status();
  json out = Header(kSchemaVersion, q.command, view);
  out.update(*body);
  return out.dump();
}

}  // namespace strata::inspect
