// The operator's inspector (`strata inspect`, docs/operations.md "Inspector"): what a node holds,
// per namespace, per prefix and per block, and why a prefix misses. One implementation serves a
// running daemon (the node's live View) and a stopped one's disk tier (the CLI's offline View),
// so both answer with the same JSON (schema_version kSchemaVersion; unknown values are null,
// never 0).
//
// Trust (docs/operations.md, "Security"): an admin caller sees every namespace; any other caller
// must name a namespace and sees only its blocks (a key held by another namespace is reported
// as absent), and is never told about other namespaces.
//
// Thread-safety: the functions are as thread-safe as the View they are given.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "ipc/ipc_protocol.h"
#include "strata/block_format.h"
#include "strata/namespace.h"
#include "strata/result.h"

namespace strata::inspect {

inline constexpr int kSchemaVersion = 1;

// Tiers holding a block, as bits.
enum TierBit : uint8_t { kDeviceBit = 1, kHostBit = 2, kDiskBit = 4 };

struct BlockFacts {
  NamespaceId ns;
  uint64_t bytes = 0;  // payload bytes
  uint8_t tiers = 0;   // TierBit set
  uint32_t pins = 0;   // load pins clients hold on it now
};

// What the node saw of a block since it started (node/block_activity.h).
struct Activity {
  int64_t stored_unix_ms = 0;       // 0: not stored here since start (age unknown)
  uint64_t hits = 0;                // lookups that found it
  int64_t last_access_unix_ms = 0;  // 0: none
};

// A hot prefix (`top`): the chain from `first` to `last`, `depth` blocks, found by `hits` lookups.
struct HotPrefix {
  BlockKey last;
  BlockKey first;
  NamespaceId ns;
  size_t depth = 0;
  uint64_t hits = 0;
  int64_t last_access_unix_ms = 0;
};

// Why a block that was cached is not any more.
struct Removal {
  int64_t unix_ms = 0;
  std::string reason;  // "evicted" or "cleared"
};

// What the inspector reads. Implementations: the node's (live) and the CLI's (offline).
class View {
 public:
  virtual ~View() = default;
  virtual std::string_view source() const = 0;  // "live" or "offline"
  virtual std::optional<BlockFacts> Find(const BlockKey& key) = 0;
  // Every locally held block, once each.
  virtual void ForEach(const std::function<void(const BlockKey&, const BlockFacts&)>& fn) = 0;
  // The namespaces described to the node (NamespaceRegistry).
  virtual std::vector<std::pair<NamespaceId, NamespaceSpec>> Namespaces() = 0;
  // The full header of a locally held block.
  virtual std::optional<BlockHeader> Header(const BlockKey& key) = 0;
  // Reads the block and checks its checksum now: true = intact; nullopt = cannot tell here.
  virtual std::optional<bool> Verify(const BlockKey& key) = 0;
  // The same for the block's disk copy (the `verify` command). A live node drops a disk block
  // that fails, as a load would; the offline view only reads.
  virtual std::optional<bool> VerifyDisk(const BlockKey& key) { return Verify(key); }
  virtual bool drops_corrupt() const { return false; }
  // When and why `key` left the node, if it did recently.
  virtual std::optional<Removal> Removed(const BlockKey&) { return std::nullopt; }
  // Clustered: how many leading keys of `keys` (none of them local) peers hold.
  virtual bool clustered() const { return false; }
  virtual size_t RemotePrefix(std::span<const BlockKey>) { return 0; }
  // Per-block activity; nullopt when unknown (offline, or not stored here since start).
  virtual std::optional<Activity> ActivityOf(const BlockKey&) { return std::nullopt; }
  // When a store of `key` began, if one is in flight (begun, not committed).
  virtual std::optional<int64_t> InFlightSince(const BlockKey&) { return std::nullopt; }
  // The `limit` hottest prefixes (of `ns` when given); nullopt when hits are not known here.
  virtual std::optional<std::vector<HotPrefix>> Top(size_t, const std::optional<NamespaceId>&) {
    return std::nullopt;
  }
};

// Answers the `namespaces`, `prefix`, `key`, `ls`, `verify` and `top` commands (`node`, `peers`,
// `funnel` and `doctor` are answered by the node or the CLI, which know the configuration). InvalidArgument for an unknown command or missing
// arguments; PermissionDenied for a non-admin caller that names no namespace.
// `progress`, when set, is called during `verify` with the blocks checked so far and the total.
using Progress = std::function<void(size_t done, size_t total)>;
Result<std::string> Run(View& view, const ipc::InspectRequest& request, bool admin,
                        const Progress& progress = nullptr);

// The JSON object of a namespace spec as the inspector prints it (no salt, only whether there
// is one).
std::string SpecJson(const NamespaceSpec& spec);

}  // namespace strata::inspect
