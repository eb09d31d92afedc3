// The directory: who holds which block (docs/cluster.md, "Directory"). It is sharded over live
// members by rendezvous hashing of block keys (rendezvous.h), and it is a hint: a pull verifies
// every block and falls back to another holder or a miss.
//
//  - DirectoryShard: the entries this node owns (key -> holders). Serves Lookup and Announce
//    (it is the transport's DirectoryService). Lookups return only holders that are live members.
//  - DirectoryClient: the holder and lookup side. Records added/evicted keys and announces them
//    to their shard owners in batches (Flush); looks up a chain by asking each owner for its keys;
//    on a membership change re-announces everything it holds to the (new) owners.
//
// Thread-safety: both classes are thread-safe (one mutex each). DirectoryShard's methods do not
// block; DirectoryClient's Flush/Lookup/OnMembershipChange block on network calls, and must not
// be called from the transport's progress thread.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "strata/block_key.h"
#include "strata/result.h"
#include "strata/status.h"
#include "transport/wire/messages.h"

namespace strata::transport {

// What a node answers to directory messages from peers (PeerTransport calls it on its progress
// thread; implementations must not block).
class DirectoryService {
 public:
  virtual ~DirectoryService() = default;
  virtual wire::LookupResponse Lookup(const wire::LookupRequest& request) = 0;
  virtual Status Announce(const wire::Announce& announce) = 0;
};

class DirectoryShard : public DirectoryService {
 public:
  explicit DirectoryShard(std::string self_id) : self_(std::move(self_id)) {}

  // Holders of each key, restricted to live members; empty for keys this shard does not know.
  wire::LookupResponse Lookup(const wire::LookupRequest& request) override;
  // Applies added/evicted keys of one holder (replace: first forget all of that holder's keys).
  // Unavailable when the holder is not a live member.
  Status Announce(const wire::Announce& announce) override;
  // New member list: forget holders that left and keys that this node no longer owns.
  void OnMembershipChange(const std::vector<std::string>& member_ids);

  size_t entries() const;

 private:
  const std::string self_;
  mutable std::mutex mu_;
  std::vector<std::string> members_;                                           // GUARDED_BY(mu_)
  std::unordered_set<std::string> live_;                                       // GUARDED_BY(mu_)
  std::unordered_map<BlockKey, std::set<std::string>, BlockKeyHash> holders_;  // GUARDED_BY(mu_)
};

// How a DirectoryClient reaches shard owners other than itself (PeerTransport in a node).
class DirectoryPeers {
 public:
  virtual ~DirectoryPeers() = default;
  virtual Result<wire::LookupResponse> Lookup(const std::string& owner,
                                              std::vector<BlockKey> keys) = 0;
  virtual Status Announce(const std::string& owner, wire::Announce announce) = 0;
};

struct DirectoryClientOptions {
  std::string self_id;
  // Keys per Announce message. Default: 4096.
  size_t batch_keys = 4096;
};

class DirectoryClient {
 public:
  // `shard` is this node's own shard (announces and lookups for keys it owns stay local).
  // REQUIRES: shard and peers outlive the client.
  DirectoryClient(DirectoryClientOptions options, DirectoryShard* shard, DirectoryPeers* peers);

  // Records that this node now holds / no longer holds `key`; sent on the next Flush.
  void Added(const BlockKey& key);
  void Evicted(const BlockKey& key);
  // Sends pending adds/evicts to their owners, batched per owner. Entries for owners that
  // cannot be reached stay pending; the first error is returned.
  Status Flush();
  // For each key of `chain`, the live members that hold it (an owner that cannot be reached
  // answers "nobody": the directory is a hint).
  std::vector<std::vector<std::string>> Lookup(const std::vector<BlockKey>& chain);
  // New member list: the shards move; every key this node holds is re-announced (replace) to its
  // owner under the new list.
  Status OnMembershipChange(const std::vector<std::string>& member_ids);

  std::string OwnerOf(const BlockKey& key) const;

 private:
  Status Send(const std::string& owner, wire::Announce announce);

  DirectoryClientOptions options_;
  DirectoryShard* shard_;
  DirectoryPeers* peers_;
  mutable std::mutex mu_;
  std::vector<std::string> members_;                          // GUARDED_BY(mu_)
  std::unordered_set<BlockKey, BlockKeyHash> held_;           // GUARDED_BY(mu_)
  std::unordered_set<BlockKey, BlockKeyHash> pending_add_;    // GUARDED_BY(mu_)
  std::unordered_set<BlockKey, BlockKeyHash> pending_evict_;  // GUARDED_BY(mu_)
};

}  // namespace strata::transport
