#include "node/live_view.h"

#include <algorithm>
#include <string_view>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "node/block_activity.h"
#include "node/cluster.h"
#include "store/eviction_policy.h"
#include "store/tiered_store.h"
#include "strata/version.h"

namespace strata {

std::optional<inspect::BlockFacts> LiveView::Find(const BlockKey& key) {
  inspect::BlockFacts f;
  auto note = [&](const Result<store::BlockLocation>& loc, uint8_t bit) {
    if (!loc.ok()) return;
    f.tiers |= bit;
    f.bytes = loc->length;
  };
  if (store_->device() != nullptr) note(store_->device()->Find(key), inspect::kDeviceBit);
  if (store_->disk() != nullptr) note(store_->disk()->Find(key), inspect::kDiskBit);
  note(store_->host().Find(key), inspect::kHostBit);
  if (f.tiers == 0) return std::nullopt;
  auto ns = store_->NamespaceOf(key);
  if (!ns) return std::nullopt;  // removed meanwhile
  f.ns = *ns;
  f.pins = pins_ ? pins_(key) : 0;
  return f;
}

void LiveView::ForEach(
    const std::function<void(const BlockKey&, const inspect::BlockFacts&)>& fn) {
  std::unordered_set<BlockKey, BlockKeyHash> seen;
  for (const BlockKey& k : store_->Keys(std::nullopt)) {
    if (!seen.insert(k).second) continue;
    if (auto f = Find(k)) fn(k, *f);
  }
}

std::vector<std::pair<NamespaceId, NamespaceSpec>> LiveView::Namespaces() {
  std::vector<std::pair<NamespaceId, NamespaceSpec>> out;
  for (const auto& e : registry_->Entries()) out.emplace_back(e.id, e.spec);
  return out;
}

std::optional<BlockHeader> LiveView::Header(const BlockKey& key) {
  if (auto b = store_->host().Acquire(key); b.ok()) return b->header();
  if (store::DiskTier* disk = store_->disk(); disk != nullptr) {
    auto loc = disk->Find(key);
    if (!loc.ok()) return std::nullopt;
    std::vector<std::byte> buf(loc->length);
    auto h = disk->Get(key, buf);
    if (h.ok()) return *h;
  }
  return std::nullopt;
}

std::optional<bool> LiveView::Verify(const BlockKey& key) {
  if (auto b = store_->host().Acquire(key); b.ok())
    return PayloadChecksum(b->payload()) == b->header().payload_checksum;
  if (store::DiskTier* disk = store_->disk(); disk != nullptr) {
    auto loc = disk->Find(key);
    if (!loc.ok()) return std::nullopt;
    std::vector<std::byte> buf(loc->length);
    auto h = disk->Get(key, buf);
    if (h.ok()) return true;
    if (h.status().code() == StatusCode::kCorruption) return false;
  }
  return std::nullopt;
}

std::optional<bool> LiveView::VerifyDisk(const BlockKey& key) {
  store::DiskTier* disk = store_->disk();
  if (disk == nullptr) return std::nullopt;
  auto loc = disk->Find(key);
  if (!loc.ok()) return std::nullopt;  // evicted meanwhile
  std::vector<std::byte> buf(loc->length);
  auto h = disk->Get(key, buf);
  if (h.ok()) return true;
  if (h.status().code() == StatusCode::kCorruption) return false;
  return std::nullopt;
}

std::optional<inspect::Removal> LiveView::Removed(const BlockKey& key) {
  return removals_->Find(key);
}

size_t LiveView::RemotePrefix(std::span<const BlockKey> keys) {
  return cluster_ != nullptr ? cluster_->RemotePrefix(keys, 0) : 0;
}

std::optional<inspect::Activity> LiveView::ActivityOf(const BlockKey& key) {
  auto f = activity_->Find(key);
  if (!f) return std::nullopt;
  return inspect::Activity{f->stored_unix_ms, f->hits, f->last_access_unix_ms};
}

std::optional<int64_t> LiveView::InFlightSince(const BlockKey& key) {
  return activity_->InFlightSince(key);
}

std::optional<std::vector<inspect::HotPrefix>> LiveView::Top(
    size_t limit, const std::optional<NamespaceId>& ns) {
  std::vector<inspect::HotPrefix> out;
  for (const auto& p : activity_->Top(limit, ns, [this](const BlockKey& k) {
         return Find(k).has_value();
       }))
    out.push_back({p.last, p.first, p.ns, p.depth, p.hits, p.last_access_unix_ms});
  return out;
}

std::string InspectNode(store::TieredStore* store, Cluster* cluster, const NodeFacts& facts) {
  using nlohmann::json;
  const NodeOptions& o = *facts.options;
  const json stats = json::parse(facts.stats_json);
  json out = {{"schema_version", inspect::kSchemaVersion},
              {"command", "node"},
              {"source", "live"},
              {"version", Version()},
              {"uptime_s", facts.uptime_s}};
#ifdef STRATA_WITH_DEVICE_TIER
  const bool cuda = true;
#else
  const bool cuda = false;
#endif
#ifdef STRATA_HAVE_UCX
  const bool ucx = true;
#else
  const bool ucx = false;
#endif
  out["build"] = {{"cuda", cuda}, {"ucx", ucx}};
  out["config"] = {{"host_pool_bytes", store->host().size()},
                   {"device_pool_bytes", o.device_pool_bytes},
                   {"data_dir", o.data_dir.empty() ? json(nullptr) : json(o.data_dir)},
                   {"disk_compression", o.data_dir.empty() ? json(nullptr)
                                                           : json(o.disk_compression)},
                   {"write_through", o.write_through},
                   {"disk_admission_min_frequency",
                    o.data_dir.empty() ? json(nullptr) : json(o.disk_admission_min_frequency)},
                   {"disk_direct_io", o.disk_direct_io},
                   {"eviction_policy", o.eviction_policy},
                   {"default_pin_ms", o.default_pin_ms},
                   {"membership", o.cluster.membership.empty() ? json(nullptr)
                                                               : json(o.cluster.membership)},
                   {"node_id", cluster ? json(cluster->node_id()) : json(nullptr)}};
  json degraded = json::array(), warnings = json::array();
  const store::StoreStats s = store->Stats();
  auto policy_of = [&](std::string_view tier) -> json {
    auto kind = store::ParsePolicyKind(o.eviction_policy);
    if (!kind.ok()) return o.eviction_policy;
    return std::string(store::PolicyKindName(tier == "disk" ? store::DiskPolicyFor(*kind) : *kind));
  };
  auto tier = [&](const char* name, const store::TierStats& t, json pinned) {
    // Pools: the share of lent slab memory that holds no payload; the disk tier's extents are
    // not measured (null).
    json fragmentation = nullptr;
    if (std::string_view(name) != "disk")
      fragmentation = t.lent_bytes == 0
                          ? 0.0
                          : 1.0 - static_cast<double>(std::min(t.payload_bytes, t.lent_bytes)) /
                                      static_cast<double>(t.lent_bytes);
    out["tiers"][name] = {{"capacity_bytes", t.capacity_bytes},
                          {"used_bytes", t.payload_bytes},
                          {"blocks", t.blocks},
                          {"pinned", pinned},
                          {"evictions", t.evictions},
                          {"evictions_per_second", nullptr},  // a rate needs two samples
                          {"fragmentation", fragmentation},
                          {"corrupt_dropped", t.corrupt_dropped},
                          {"policy", policy_of(name)}};
    if (t.corrupt_dropped > 0)
      degraded.push_back(std::to_string(t.corrupt_dropped) + " " + name +
                         " blocks failed checksum verification and were dropped");
  };
  out["tiers"] = json::object();
  if (store->device() != nullptr) tier("device", s.device, nullptr);
  tier("host", s.host, facts.pins);
  if (store::DiskTier* disk = store->disk(); disk != nullptr) {
    tier("disk", s.disk, nullptr);
    // used_bytes is what the blocks take on disk; raw_bytes what they hold (before compression).
    out["tiers"]["disk"]["raw_bytes"] = s.disk.raw_payload_bytes;
    out["tiers"]["disk"]["compressed_blocks"] = s.disk.compressed_blocks;
    const auto& info = disk->open_info();
    if (!info.index_recovery.empty())
      degraded.push_back("disk tier index was damaged at start: " + info.index_recovery);
    if (info.records_dropped > 0)
      degraded.push_back(std::to_string(info.records_dropped) +
                         " disk index records were invalid at start and dropped");
  }
  if (s.demotion_errors > 0)
    degraded.push_back(std::to_string(s.demotion_errors) +
                       " demotions to disk failed (disk full or I/O errors)");
  if (s.device_corrupt > 0)
    degraded.push_back(std::to_string(s.device_corrupt) +
                       " device copies failed verification on promotion");
  if (facts.fingerprint_mismatches > 0)
    warnings.push_back(std::to_string(facts.fingerprint_mismatches) +
                       " namespace descriptions did not fingerprint to their namespace id");
  if (store->host().populating())
    warnings.push_back("the host pool's pages are still being faulted in");
  out["health"] = degraded.empty() ? "ok" : "degraded";
  out["degraded_reasons"] = degraded;
  out["warnings"] = warnings;
  out["pin_owners"] = facts.pin_owners;
  out["pins"] = facts.pins;
  out["lookups"] = stats.value("lookups", json(nullptr));
  out["cluster"] = stats.value("cluster", json(nullptr));
  return out.dump();
}

}  // namespace strata
