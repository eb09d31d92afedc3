// Cluster: what makes a LocalNode a cluster node (DESIGN.md "Cluster", docs/cluster.md). It owns
// the PeerTransport (the host pool registered slab by slab, at Open, and again for each slab
// renewed for another tenant), the membership (etcd or static),
// this node's directory shard, the DirectoryClient that announces what the host tier holds, and
// the BlockSource that serves peers' pulls zero-copy from the host tier.
//
//  - Announce: every block the host or disk tier holds (TierChanged); a background thread
//    flushes the changes in batches every announce_interval_ms and applies membership changes
//    (shards move, holders re-announce, departed peers are dropped). Peers' pulls of a block
//    held only on disk promote it into the host tier first, off the progress thread.
//  - Fetch: directory lookup, holder choice (same host first, then the fewest pulls in flight),
//    pulls issued to all chosen holders at once, each block's payload landing straight in a
//    host-tier reservation (its header in a 64-byte buffer), verified by the transport (header,
//    key, namespace, payload checksum), committed, announced. Copies of payload bytes: 0 beyond
//    the transfer itself, on both sides.
//
// Thread-safety: all methods are thread-safe. Ownership: the TieredStore must outlive the
// Cluster. TierChanged() does not block (they may run with the host pool's eviction lock held);
// the other methods block on the network, each call at most a few request timeouts.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "node/node.h"
#include "store/tier.h"
#include "strata/block_key.h"
#include "strata/result.h"

namespace strata {
namespace store {
class TieredStore;
}  // namespace store

// A node id names files in the static membership directory and keys in etcd: 1 to 128 bytes of
// [A-Za-z0-9._-], not "." and without "..". InvalidArgument naming `what` and the id otherwise.
Status ValidateNodeId(std::string_view id, std::string_view what = "node_id");

class Cluster {
 public:
  // Starts the transport, joins membership, builds the directory. InvalidArgument for bad
  // options (no secret, unknown membership); Unavailable when etcd cannot be reached;
  // NotSupported in a build without UCX.
  static Result<std::unique_ptr<Cluster>> Open(const ClusterOptions& options,
                                               store::TieredStore* store);
  virtual ~Cluster() = default;

  virtual const std::string& node_id() const = 0;

  // A local tier gained (`added`) or lost block `key` (TieredStoreOptions::on_tier_change). The
  // directory is told that this node holds a block while its host or disk tier does: added when
  // the first of the two gains it, evicted when the last loses it (a demotion re-announces it
  // once the disk has it). Never blocks; may run with a tier's lock held.
  virtual void TierChanged(store::TierKind tier, const BlockKey& key, bool added) = 0;

  // How many keys of chain[local, ...), from the first on, some live peer holds (directory
  // lookup). `chain` is the whole chain a client looked up; its first `local` blocks are local.
  // The answer is kept for the Loads that follow (holder hints, and the chain's order: a Fetch
  // of part of it knows the block before its first and the blocks after its last).
  virtual size_t RemotePrefix(std::span<const BlockKey> chain, size_t local) = 0;

  // Pulls keys[local_prefix, ...) from the peers that hold them into the host tier. Returns how
  // many leading blocks of `keys` are local afterwards (>= local_prefix). `ns`: the namespace
  // the blocks must carry, named in the pull (a Load's, which the daemon checked the client may
  // use); holders serve a private tenant's blocks only to a pull that names their namespace.
  // NamespaceId{}: any namespace, and only the shared tenant's blocks (a prefetch by key).
  virtual size_t Fetch(std::span<const BlockKey> keys, size_t local_prefix,
                       const NamespaceId& ns) = 0;

  // Queues Fetch(keys, <local prefix>) for the cluster's fetch thread (Prefetch). Never blocks.
  virtual void FetchAsync(std::vector<BlockKey> keys) = 0;

  // Read-ahead for a Load that comes in chunks (docs/cluster.md, "Read-ahead"): when a client
  // looked up a chain that `keys` is a part of, queues a Fetch of the next keys.size() blocks
  // of that chain for the fetch thread, so that the next chunk's pull is in flight while this
  // one is pulled and copied. Nothing when the chain ends at keys.back() or is not known (a
  // client Lookup more than 2 s ago). `ns` as for Fetch. Never blocks.
  virtual void ReadAhead(std::span<const BlockKey> keys, const NamespaceId& ns) = 0;

  // Pulling on lookup (`pull_on_lookup`; docs/cluster.md, "Pulling on lookup"): after a client
  // Lookup found keys[0, n) of `keys` held only by peers, queues a pull of the first
  // kPullOnLookupBlocks of them for the fetch thread, ahead of other queued work, and marks them
  // as being pulled before it returns, so that the Load that follows waits for that pull instead
  // of pulling them again. Nothing when the setting is off or some of them are being pulled
  // already (a repeated Lookup). `ns` as for Fetch (none: NamespaceId{}). Never blocks on I/O.
  virtual void PullOnLookup(std::span<const BlockKey> keys, size_t n,
                            const std::optional<NamespaceId>& ns) = 0;
  // Blocks a Lookup pulls at most: one streamed-Load chunk of 2 MiB blocks (lib/client).
  static constexpr size_t kPullOnLookupBlocks = 32;

  // Cluster statistics as a JSON object (members, pulls, bytes, failures).
  virtual std::string StatsJson() = 0;

  // The `peers` answer of `strata inspect` (docs/operations.md): every member with what it
  // published (host, listen address, socket, version), how long this node has seen its current
  // registration, the handshake's outcome, and the pulls this node made from it: totals, and
  // over the last minute GB/s and p50/p99 of a pull's time (post to completion seen).
  virtual std::string PeersJson() = 0;

  // OK when membership's store answers now (etcd: a range of the member prefix; static: the
  // shared directory can be listed); the error otherwise (`strata inspect doctor`).
  virtual Status CheckMembership() = 0;
};

}  // namespace strata
