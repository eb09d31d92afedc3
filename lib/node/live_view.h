// LiveView: the inspector's view (node/inspect.h) of a running node's tiers, its namespace
// registry, its removal log and, when clustered, the directory.
//
// Reading a block's header or checking its checksum takes a short read pin (host) or reads the
// payload (disk), like a load; a disk block that fails the check is dropped, as a load would.
//
// Thread-safety: as the tiered store (every method may run beside requests).
#pragma once

#include <functional>
#include <string>

#include "node/node.h"

#include "node/inspect.h"
#include "node/namespace_registry.h"
#include "node/removal_log.h"

namespace strata {

namespace store {
class TieredStore;
}
class Cluster;
class BlockActivity;

class LiveView final : public inspect::View {
 public:
  // REQUIRES: everything outlives the view; `cluster` may be null (single node).
  LiveView(store::TieredStore* store, Cluster* cluster, const NamespaceRegistry* registry,
           const RemovalLog* removals, std::function<uint32_t(const BlockKey&)> pins,
           const BlockActivity* activity)
      : store_(store),
        cluster_(cluster),
        registry_(registry),
        removals_(removals),
        pins_(std::move(pins)),
        activity_(activity) {}

  std::string_view source() const override { return "live"; }
  std::optional<inspect::BlockFacts> Find(const BlockKey& key) override;
  void ForEach(const std::function<void(const BlockKey&, const inspect::BlockFacts&)>& fn)
      override;
  std::vector<std::pair<NamespaceId, NamespaceSpec>> Namespaces() override;
  std::optional<BlockHeader> Header(const BlockKey& key) override;
  std::optional<bool> Verify(const BlockKey& key) override;
  std::optional<bool> VerifyDisk(const BlockKey& key) override;
  bool drops_corrupt() const override { return true; }
  std::optional<inspect::Removal> Removed(const BlockKey& key) override;
  bool clustered() const override { return cluster_ != nullptr; }
  size_t RemotePrefix(std::span<const BlockKey> keys) override;
  std::optional<inspect::Activity> ActivityOf(const BlockKey& key) override;
  std::optional<int64_t> InFlightSince(const BlockKey& key) override;
  std::optional<std::vector<inspect::HotPrefix>> Top(
      size_t limit, const std::optional<NamespaceId>& ns) override;

 private:
  store::TieredStore* store_;
  Cluster* cluster_;
  const NamespaceRegistry* registry_;
  const RemovalLog* removals_;
  std::function<uint32_t(const BlockKey&)> pins_;
  const BlockActivity* activity_;
};

// The reply to `strata inspect node` (docs/operations.md): version and build, configuration,
// uptime, health with the reasons for a degraded state, and per-tier usage.
struct NodeFacts {
  const NodeOptions* options = nullptr;
  double uptime_s = 0;
  size_t pin_owners = 0;  // client sessions holding load pins
  size_t pins = 0;
  uint64_t fingerprint_mismatches = 0;
  std::string stats_json;  // Node::StatsJson()
};
std::string InspectNode(store::TieredStore* store, Cluster* cluster, const NodeFacts& facts);

}  // namespace strata
