// The cluster node's private state (lib/node/cluster.h), shared by the files that implement it,
// one concept each:
//   cluster.cc          opening the node (transport, membership: etcd or static), membership
//                       changes and the announce loop, statistics
//   cluster_fetch.cc    fetching: directory lookups and holder hints, the fetch queue, holder
//                       ranking, pulls, placement and commit
//   host_block_source.h serving peers' pulls from the host tier
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "node/cluster.h"
#include "node/held_tiers.h"
#include "node/host_block_source.h"
#include "store/tiered_store.h"
#include "strata/block_format.h"
#include "transport/directory/directory.h"
#include "transport/directory/transport_peers.h"
#include "transport/membership/membership.h"
#include "transport/membership/static_membership.h"
#include "transport/peer_transport.h"

namespace strata {

class ClusterImpl final : public Cluster {
 public:
  using Clock = std::chrono::steady_clock;

  ClusterImpl(const ClusterOptions& options, store::TieredStore* store)
      : options_(options), store_(store), source_(store) {}

  ~ClusterImpl() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (worker_.joinable()) worker_.join();
    if (fetcher_.joinable()) fetcher_.join();
    // Leaves (revokes the lease, removes the member file) before the transport goes.
    membership_.reset();
    if (renewal_listener_ != 0) store_->host().RemoveSlabRenewedListener(renewal_listener_);
    transport_.reset();
  }

  Status Start();

  const std::string& node_id() const override { return self_.id; }

  void TierChanged(store::TierKind tier, const BlockKey& key, bool added) override {
    switch (held_.Change(tier, key, added)) {
      case HeldTiers::Transition::kFirst:
        client_->Added(key);
        added_.fetch_add(1, std::memory_order_relaxed);
        break;
      case HeldTiers::Transition::kLast:
        client_->Evicted(key);
        evicted_.fetch_add(1, std::memory_order_relaxed);
        break;
      case HeldTiers::Transition::kNone:
        break;
    }
  }

  size_t RemotePrefix(std::span<const BlockKey> chain, size_t local) override;

  size_t Fetch(std::span<const BlockKey> keys, size_t local_prefix,
               const NamespaceId& ns) override;

  // Queues a background Fetch (Prefetch).
  void FetchAsync(std::vector<BlockKey> keys) override {
    std::lock_guard<std::mutex> lock(mu_);
    fetch_queue_.push_back({std::move(keys), NamespaceId{}});
    cv_.notify_all();
  }

  void ReadAhead(std::span<const BlockKey> keys, const NamespaceId& ns) override;

  void PullOnLookup(std::span<const BlockKey> keys, size_t n,
                    const std::optional<NamespaceId>& ns) override;

  std::string StatsJson() override;

  std::string PeersJson() override;

  Status CheckMembership() override;

 private:
  // Known holders (ClusterOptions::holder_memory_ms; docs/cluster.md, "Remembered holders"):
  // per key, the holders the directory last named (a client Lookup's answer, a Fetch's) or the
  // holder a verified pull last came from, for holder_memory_ms. They answer a client Lookup
  // without the directory and tell the Load that follows where to pull (both through Recall):
  // one round trip through the shard owner's progress thread less each. A pull that fails
  // forgets its key, so the next Lookup or Fetch asks the directory. At most kMaxHints keys
  // (cleared whole when full) and kMaxKnownHolders holders per key; holder ids are interned
  // (holder_names_), so an entry holds no string.
  static constexpr size_t kMaxHints = 1 << 16;
  static constexpr size_t kMaxKnownHolders = 6;
  static constexpr size_t kMaxHolderNames = 4096;
  struct KnownHolders {
    std::array<uint16_t, kMaxKnownHolders> ids{};
    uint8_t n = 0;
    Clock::time_point at;
  };
  bool remembering() const { return options_.holder_memory_ms > 0; }
  // Records the holders h[i] of keys[i] (no-op unless remembering()).
  void Remember(std::span<const BlockKey> keys, const std::vector<std::vector<std::string>>& h);
  // The known holders of every key of `keys`, younger than holder_memory_ms, or nothing when a
  // key has none. Recall also drops holders that are this node or not members now, and answers
  // nothing when a key is left without one (a client Lookup and a Fetch then ask the directory).
  std::optional<std::vector<std::vector<std::string>>> Known(std::span<const BlockKey> keys);
  std::optional<std::vector<std::vector<std::string>>> Recall(std::span<const BlockKey> keys);
  // After a pull round: `holder` served `key` verified (remembered anew) or failed it
  // (forgotten).
  void RememberServed(const BlockKey& key, const std::string& holder);
  void Forget(const BlockKey& key);
  // REQUIRES: hints_mu_ held. The interned id of `holder`.
  uint16_t InternHolder(const std::string& holder);
  // REQUIRES: hints_mu_ held. Empties the map and the interned names, when either is full.
  void ClearKnownIfFull(size_t adding);

  // The chains clients looked up, in order, by key: for a Fetch of part of a chain, the block
  // before its first (the parent its first block is committed with) and the blocks after its
  // last (ReadAhead). Kept kChainTtl, at most kMaxHints keys; a later Lookup replaces a key's.
  // 2 s: a streamed Load (one Fetch per 64 MiB chunk) of a long prefix outlasts 500 ms under
  // load.
  static constexpr auto kChainTtl = std::chrono::milliseconds(2000);
  struct ChainPlace {
    std::shared_ptr<const std::vector<BlockKey>> chain;
    size_t pos = 0;
    Clock::time_point at;
  };
  void NoteChain(std::span<const BlockKey> chain);
  // Where `key` lies in a chain a client looked up in the last kChainTtl, if it does.
  std::optional<ChainPlace> FindChain(const BlockKey& key);

  // Keys some Fetch is pulling now (ReadAhead's on the fetch thread, a Load's on its own): a
  // second Fetch of one of them waits for the first (at most two request timeouts) and then
  // finds it local, instead of pulling it twice.
  // Marks every key of `keys` as pulled by the caller, once no other Fetch pulls any of them
  // (or the wait's bound passed: then the caller pulls them alongside). Returns whether it
  // waited. UnmarkPulling(keys) undoes it.
  bool MarkPulling(std::span<const BlockKey> keys);
  // Marks them only when no other Fetch pulls any of them now; never waits.
  bool TryMarkPulling(std::span<const BlockKey> keys);
  void UnmarkPulling(std::span<const BlockKey> keys);
  // Fetch, for keys[local_prefix, ...) that the caller marked as being pulled.
  size_t FetchMarked(std::span<const BlockKey> keys, size_t local_prefix, const NamespaceId& ns);
  bool HasPeer(const std::vector<std::string>& holders) const {
    for (const auto& h : holders)
      if (h != self_.id) return true;
    return false;
  }

  // New member list: addresses for the directory's connections, shards move, held keys are
  // re-announced, sessions with departed peers dropped. A member that fails the secret handshake
  // (either side refuses the other's proof) stays a member, since etcd or the static directory
  // lists it, but owns no directory shard: the shards are spread over the members this node
  // shares the secret with. Rejected members are tried again every kRecheckRejected.
  void ApplyMembers(const std::vector<transport::Member>& members);

  void BackgroundLoop();

  void FetchLoop();

  // One round of Fetch: pulls rest[i] for each i of `want` from its best holder not yet tried,
  // commits what verified (done[i] = 1), records each block's status in result[i].
  // Placement: a block with room[i] == 0 is placed when its header arrives, on the progress
  // thread, without eviction (TryReserve); one that found no free space there records its
  // length in room[i]. A block with room[i] > 0 gets its reservation here, on the calling
  // thread, evicting (and writing back) as needed, before its pull is posted.
  // `first_parent`: the parent of keys[0] (the block before it in the chain a client looked
  // up), or nullptr.
  void PullRound(std::span<const BlockKey> keys, size_t local_prefix, const NamespaceId& ns,
                 const BlockKey* first_parent,
                 const std::vector<std::vector<std::string>>& holders,
                 const std::vector<size_t>& want, std::vector<std::set<std::string>>& tried,
                 std::vector<Status>& result, std::vector<uint8_t>& done,
                 std::vector<uint64_t>& room, std::vector<uint16_t>& room_tenant);

  // Per pulled block: where its header lands and the host reservation its payload went to.
  struct Landing {
    std::array<std::byte, kBlockHeaderSize> header{};
    std::optional<store::WriteReservation> reservation;
  };

  const ClusterOptions options_;
  store::TieredStore* store_;
  transport::Member self_;
  HostBlockSource source_;  // declared before transport_: outlives it
  HeldTiers held_;          // what the host and disk tiers hold (TierChanged)
  std::unique_ptr<transport::DirectoryShard> shard_;
  std::unique_ptr<transport::PeerTransport> transport_;
  uint64_t renewal_listener_ = 0;  // the host tier's slab-renewal listener for transport_
  std::unique_ptr<transport::TransportDirectoryPeers> peers_;
  std::unique_ptr<transport::DirectoryClient> client_;
  std::unique_ptr<transport::Membership> membership_;
  std::mutex hints_mu_;
  std::unordered_map<BlockKey, KnownHolders, BlockKeyHash> known_;  // GUARDED_BY(hints_mu_)
  std::vector<std::string> holder_names_;                  // GUARDED_BY(hints_mu_): by id
  std::unordered_map<std::string, uint16_t> holder_ids_;   // GUARDED_BY(hints_mu_)
  std::unordered_map<BlockKey, ChainPlace, BlockKeyHash> chains_;  // GUARDED_BY(hints_mu_)
  std::mutex pulling_mu_;
  std::condition_variable pulling_cv_;
  std::unordered_map<BlockKey, uint32_t, BlockKeyHash> pulling_;  // GUARDED_BY(pulling_mu_)
  transport::StaticMembership* static_membership_ = nullptr;  // membership_, when static

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;                                                // GUARDED_BY(mu_)
  std::map<std::string, transport::Member> members_;                 // GUARDED_BY(mu_)
  static constexpr std::chrono::seconds kRecheckRejected{2};
  std::set<std::string> rejected_;                                   // GUARDED_BY(mu_)
  std::chrono::steady_clock::time_point rejected_checked_;           // GUARDED_BY(mu_)
  std::optional<std::vector<transport::Member>> pending_members_;   // GUARDED_BY(mu_)
  std::unordered_map<std::string, int> in_flight_;                  // GUARDED_BY(mu_)
  struct FetchJob {
    std::vector<BlockKey> keys;
    NamespaceId ns;       // as for Fetch
    bool marked = false;  // keys marked as being pulled by whoever queued it (PullOnLookup)
  };
  std::deque<FetchJob> fetch_queue_;                                 // GUARDED_BY(mu_)
  std::thread worker_;
  std::thread fetcher_;

  // When this node saw each member's current registration appear (its "lease age").
  std::map<std::string, Clock::time_point> member_since_;           // GUARDED_BY(mu_)

  std::atomic<uint64_t> added_{0}, evicted_{0}, pulls_{0}, pulled_blocks_{0}, pulled_bytes_{0},
      pull_failures_{0};
  // Fetch's stage profile (StatsJson "fetch_profile"), nanoseconds summed over every Fetch.
  std::atomic<uint64_t> room_retries_{0}, hinted_fetches_{0}, read_aheads_{0},
      pulling_waits_{0}, pulls_on_lookup_{0}, remembered_lookups_{0}, holders_forgotten_{0};
  std::atomic<uint64_t> fetches_{0}, prof_lookup_ns_{0}, prof_prepare_ns_{0}, prof_pull_ns_{0},
      prof_first_data_ns_{0}, prof_verify_ns_{0}, prof_commit_ns_{0}, prof_fetch_ns_{0};
  // The directory part of client Lookups (RemotePrefix), summed.
  std::atomic<uint64_t> remote_lookups_{0}, prof_remote_lookup_ns_{0};
  static void AddNs(std::atomic<uint64_t>& to, Clock::duration d) {
    to.fetch_add(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(d)
                                           .count()),
                 std::memory_order_relaxed);
  }
  static void AddSeconds(std::atomic<uint64_t>& to, double s) {
    to.fetch_add(static_cast<uint64_t>(s * 1e9), std::memory_order_relaxed);
  }

  // Pulls from each peer, measured in PullRound: totals and the last kMaxSamples pull ops.
  static constexpr auto kRecentPulls = std::chrono::seconds(60);
  static constexpr size_t kMaxSamples = 1024;
  struct PullSample {
    Clock::time_point at;
    double seconds = 0;
    uint64_t bytes = 0;
  };
  // Bounds (seconds) of the per-peer pull time histogram in StatsJson's "peers" (/metrics).
  static constexpr std::array<double, 15> kPullBounds = {
      1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5, 5};
  struct PeerPulls {
    uint64_t ops = 0, blocks = 0, bytes = 0, failures = 0;
    std::deque<PullSample> recent;
    std::array<uint64_t, kPullBounds.size() + 1> buckets{};  // per bound, then +Inf
    double seconds = 0;
  };
  void NotePull(const std::string& peer, double seconds, uint64_t blocks, uint64_t bytes,
                uint64_t failures) {
    std::lock_guard<std::mutex> lock(stats_mu_);
    PeerPulls& p = peer_pulls_[peer];
    ++p.ops;
    p.blocks += blocks;
    p.bytes += bytes;
    p.failures += failures;
    p.recent.push_back({Clock::now(), seconds, bytes});
    ++p.buckets[std::lower_bound(kPullBounds.begin(), kPullBounds.end(), seconds) -
                kPullBounds.begin()];
    p.seconds += seconds;
    if (p.recent.size() > kMaxSamples) p.recent.pop_front();
  }
  void NoteFailures(const std::string& peer, uint64_t failures) {
    std::lock_guard<std::mutex> lock(stats_mu_);
    peer_pulls_[peer].failures += failures;
  }
  std::mutex stats_mu_;
  std::map<std::string, PeerPulls> peer_pulls_;  // GUARDED_BY(stats_mu_)
};

}  // namespace strata
