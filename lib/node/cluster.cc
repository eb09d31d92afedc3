// Cluster over transport/ (PeerTransport, membership, directory) and the host tier. See cluster.h.
#include "node/cluster.h"
#include "node/host_block_source.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <iostream>
#include <map>
#include <optional>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "store/tiered_store.h"
#include "strata/block_format.h"
#include "transport/directory/directory.h"
#include "transport/directory/transport_peers.h"
#include "strata/version.h"
#include "transport/membership/etcd_client.h"
#include "transport/membership/etcd_membership.h"
#include "transport/membership/membership.h"
#include "transport/membership/static_membership.h"
#include "transport/peer_transport.h"
#include "transport/wire/auth.h"

namespace strata {
namespace {

using Clock = std::chrono::steady_clock;

std::string HostName() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  return buf;
}

class ClusterImpl final : public Cluster {
 public:
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
    transport_.reset();
  }

  Status Start() {
    self_.id = options_.node_id.empty() ? HostName() + "-" + std::to_string(::getpid())
                                        : options_.node_id;
    STRATA_RETURN_IF_ERROR(ValidateNodeId(self_.id, options_.node_id.empty()
                                                        ? "node id from the host name"
                                                        : "node_id"));
    for (const std::string& peer : options_.static_peers)
      STRATA_RETURN_IF_ERROR(ValidateNodeId(peer, "static_peers"));
    self_.host = HostName();
    self_.listen_addr = options_.listen_addr;
    self_.socket = options_.inspect_socket;
    self_.version = Version();
    auto secret = wire::LoadClusterSecret(
        wire::ClusterSecretSource{options_.secret, "STRATA_CLUSTER_SECRET", options_.secret_file});
    if (!secret.ok()) return secret.status().WithContext("cluster_secret");
    shard_ = std::make_unique<transport::DirectoryShard>(self_.id);
    transport::PeerTransportOptions to;
    to.node_id = self_.id;
    to.cluster_secret = *secret;
    to.tls = options_.ucx_tls;
    to.listen_addr = options_.listen_addr;
    // The whole memfd: headers and slabs; registered once, here.
    to.regions.push_back({store_->host().base(), store_->host().size()});
    to.request_timeout = std::chrono::milliseconds(options_.request_timeout_ms);
    to.data_peer_errors = options_.ucx_peer_errors;
    to.block_source = &source_;
    to.directory = shard_.get();
    auto transport = transport::PeerTransport::Open(std::move(to));
    if (!transport.ok()) return transport.status().WithContext("cluster transport");
    transport_ = std::move(transport).value();
    self_.address = transport_->worker_address();
    peers_ = std::make_unique<transport::TransportDirectoryPeers>(transport_.get());
    transport::DirectoryClientOptions dco;
    dco.self_id = self_.id;
    client_ = std::make_unique<transport::DirectoryClient>(dco, shard_.get(), peers_.get());

    // Either kind: members now, then changes through the background loop.
    if (options_.membership == "etcd") {
      transport::EtcdMembershipOptions eo;
      eo.endpoint = options_.etcd_endpoint;
      eo.prefix = options_.etcd_prefix;
      eo.lease_ttl = std::chrono::seconds(options_.etcd_lease_ttl_s);
      eo.call_timeout = std::chrono::milliseconds(options_.request_timeout_ms);
      eo.self = self_;
      auto m = transport::EtcdMembership::Open(std::move(eo));
      if (!m.ok()) return m.status().WithContext("etcd membership");
      membership_ = std::move(m).value();
    } else if (options_.membership == "static") {
      transport::StaticMembershipOptions so;
      so.self = self_;
      so.peers = options_.static_peers;
      so.dir = options_.static_dir;
      so.poll_interval = std::chrono::milliseconds(options_.announce_interval_ms);
      auto m = transport::StaticMembership::OpenInDirectory(std::move(so));
      if (!m.ok()) return m.status();
      static_membership_ = m->get();
      membership_ = std::move(m).value();
    } else {
      return Status::InvalidArgument("membership: '" + options_.membership +
                                     "' (expected etcd or static)");
    }
    ApplyMembers(membership_->Members());
    membership_->SetListener([this](const std::vector<transport::Member>& members) {
      std::lock_guard<std::mutex> lock(mu_);
      pending_members_ = members;
      cv_.notify_all();
    });
    worker_ = std::thread([this] { BackgroundLoop(); });
    fetcher_ = std::thread([this] { FetchLoop(); });
    return Status::OK();
  }

  const std::string& node_id() const override { return self_.id; }

  void Added(const BlockKey& key) override {
    client_->Added(key);
    added_.fetch_add(1, std::memory_order_relaxed);
  }
  void Evicted(const BlockKey& key) override {
    client_->Evicted(key);
    evicted_.fetch_add(1, std::memory_order_relaxed);
  }

  size_t RemotePrefix(std::span<const BlockKey> keys) override {
    if (keys.empty()) return 0;
    auto holders = client_->Lookup(std::vector<BlockKey>(keys.begin(), keys.end()));
    size_t n = 0;
    while (n < holders.size() && HasPeer(holders[n])) ++n;
    NoteHints(keys.first(n), holders);
    return n;
  }

  size_t Fetch(std::span<const BlockKey> keys, size_t local_prefix) override;

  // Queues a background Fetch (Prefetch).
  void FetchAsync(std::vector<BlockKey> keys) override {
    std::lock_guard<std::mutex> lock(mu_);
    fetch_queue_.push_back(std::move(keys));
    cv_.notify_all();
  }

  std::string StatsJson() override {
    nlohmann::json j;
    {
      std::lock_guard<std::mutex> lock(mu_);
      j["members"] = members_.size();
      j["rejected_members"] = rejected_;  // failed the secret handshake: no directory shard
      j["directory_members"] = members_.size() - rejected_.size();
    }
    j["node_id"] = self_.id;
    j["announced_added"] = added_.load();
    j["announced_evicted"] = evicted_.load();
    j["directory_entries"] = shard_->entries();
    j["pulls"] = pulls_.load();
    j["pulled_blocks"] = pulled_blocks_.load();
    j["pulled_bytes"] = pulled_bytes_.load();
    j["pull_failures"] = pull_failures_.load();
    j["served_blocks"] = source_.served();
    // Pulled blocks that found no free space on arrival and were pulled again into room made on
    // the fetch thread (eviction never runs on the progress thread).
    j["pull_room_retries"] = room_retries_.load();
    // Fetches that pulled from the holders a client's Lookup had just been told (no second
    // directory lookup).
    j["hinted_fetches"] = hinted_fetches_.load();
    // Where Fetch's time went, summed over every Fetch (docs/cluster.md, "Where a pull's time
    // goes"): the directory lookup, connecting and preparing, the pulls (post to the last
    // block), of which the first block's wait and the progress thread's verification, and the
    // commit to the host tier.
    auto secs = [](const std::atomic<uint64_t>& ns) { return double(ns.load()) / 1e9; };
    j["fetch_profile"] = {{"fetches", fetches_.load()},
                          {"lookup_s", secs(prof_lookup_ns_)},
                          {"prepare_s", secs(prof_prepare_ns_)},
                          {"pull_s", secs(prof_pull_ns_)},
                          {"first_data_s", secs(prof_first_data_ns_)},
                          {"verify_s", secs(prof_verify_ns_)},
                          {"commit_s", secs(prof_commit_ns_)}};
    return j.dump();
  }

  std::string PeersJson() override {
    using nlohmann::json;
    const auto now = Clock::now();
    json members = json::array();
    std::map<std::string, PeerPulls> pulls;
    {
      std::lock_guard<std::mutex> lock(stats_mu_);
      pulls = peer_pulls_;
    }
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, m] : members_) {
      json p = {{"id", id}, {"self", id == self_.id}, {"host", m.host},
                {"same_host", m.host == self_.host}};
      auto text = [](const std::string& v) { return v.empty() ? json(nullptr) : json(v); };
      p["listen_addr"] = text(m.listen_addr);
      p["socket"] = text(m.socket);
      p["version"] = text(m.version);
      auto since = member_since_.find(id);
      p["lease_age_s"] = since == member_since_.end()
                             ? json(nullptr)
                             : json(std::chrono::duration<double>(now - since->second).count());
      p["handshake"] = id == self_.id ? json(nullptr) : json(rejected_.count(id) ? "rejected"
                                                                                  : "ok");
      // UCX 1.13 cannot say which lane an endpoint chose: the context's transports, and
      // whether same-host ones (shm, cma) can apply.
      p["transport"] = transport_->tls().empty() ? json(nullptr) : json(transport_->tls());
      if (id == self_.id) {
        p["pulls"] = p["pulled_blocks"] = p["pulled_bytes"] = p["pull_failures"] = nullptr;
        p["recent"] = nullptr;
        members.push_back(std::move(p));
        continue;
      }
      const PeerPulls& s = pulls[id];
      p["pulls"] = s.ops;
      p["pulled_blocks"] = s.blocks;
      p["pulled_bytes"] = s.bytes;
      p["pull_failures"] = s.failures;
      std::vector<double> ms;
      uint64_t bytes = 0;
      double seconds = 0;
      for (const PullSample& x : s.recent) {
        if (now - x.at > kRecentPulls) continue;
        ms.push_back(x.seconds * 1e3);
        bytes += x.bytes;
        seconds += x.seconds;
      }
      std::sort(ms.begin(), ms.end());
      auto pct = [&](double q) {
        if (ms.empty()) return json(nullptr);
        size_t i = static_cast<size_t>(q * double(ms.size() - 1) + 0.5);
        return json(ms[std::min(i, ms.size() - 1)]);
      };
      p["recent"] = {{"window_s", std::chrono::duration<double>(kRecentPulls).count()},
                     {"pulls", ms.size()},
                     {"bytes", bytes},
                     {"gb_per_s", seconds > 0 ? json(double(bytes) / seconds / 1e9)
                                              : json(nullptr)},
                     {"p50_ms", pct(0.50)},
                     {"p99_ms", pct(0.99)}};
      members.push_back(std::move(p));
    }
    json out = {{"node_id", self_.id},
                {"membership", options_.membership},
                {"lease_ttl_s", options_.membership == "etcd"
                                    ? json(options_.etcd_lease_ttl_s) : json(nullptr)},
                {"ucx_tls", transport_->tls().empty() ? json(nullptr) : json(transport_->tls())},
                {"listen_addr", options_.listen_addr},
                {"members", members}};
    return out.dump();
  }

  Status CheckMembership() override {
    if (options_.membership == "etcd") {
      transport::EtcdClient client(options_.etcd_endpoint,
                                   std::chrono::milliseconds(options_.request_timeout_ms));
      int64_t revision = 0;
      auto r = client.RangePrefix(options_.etcd_prefix, &revision);
      if (!r.ok()) return r.status().WithContext("etcd at " + options_.etcd_endpoint);
      return Status::OK();
    }
    return static_membership_ != nullptr ? static_membership_->Check() : Status::OK();
  }

 private:
  // Holder hints: what the directory answered a client's Lookup (RemotePrefix), kept for
  // kHintTtl so that the Load that follows pulls without asking the directory again (one round
  // trip through the shard owner's progress thread less). A hint is as good as the directory's
  // answer was: a stale one fails its blocks in the first round, and the second round asks the
  // directory afresh (Fetch).
  static constexpr auto kHintTtl = std::chrono::milliseconds(500);
  static constexpr size_t kMaxHints = 1 << 16;
  struct Hint {
    std::vector<std::string> holders;
    Clock::time_point at;
  };
  void NoteHints(std::span<const BlockKey> keys, const std::vector<std::vector<std::string>>& h) {
    const auto now = Clock::now();
    std::lock_guard<std::mutex> lock(hints_mu_);
    if (hints_.size() + keys.size() > kMaxHints) hints_.clear();
    for (size_t i = 0; i < keys.size() && i < h.size(); ++i) hints_[keys[i]] = Hint{h[i], now};
  }
  // The hinted holders of every key of `keys` (taken: a hint serves one Fetch), or nothing when
  // a key has no fresh hint.
  std::optional<std::vector<std::vector<std::string>>> TakeHints(std::span<const BlockKey> keys) {
    const auto now = Clock::now();
    std::lock_guard<std::mutex> lock(hints_mu_);
    std::vector<std::vector<std::string>> out;
    out.reserve(keys.size());
    for (const BlockKey& k : keys) {
      auto it = hints_.find(k);
      if (it == hints_.end() || now - it->second.at > kHintTtl) return std::nullopt;
      out.push_back(it->second.holders);
    }
    for (const BlockKey& k : keys) hints_.erase(k);
    return out;
  }

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
  void ApplyMembers(const std::vector<transport::Member>& members) {
    std::set<std::string> rejected;
    for (const auto& m : members) {
      if (m.id == self_.id) continue;
      Status st = transport_->Connect(m.id, m.address);
      if (st.code() == StatusCode::kPermissionDenied) rejected.insert(m.id);
    }
    std::vector<std::string> ids;
    std::vector<std::string> departed;
    {
      std::lock_guard<std::mutex> lock(mu_);
      std::map<std::string, transport::Member> next;
      for (const auto& m : members) {
        next[m.id] = m;
        if (!rejected.count(m.id)) ids.push_back(m.id);
      }
      for (const auto& [id, m] : members_)
        if (!next.count(id)) departed.push_back(id);
      const auto now = Clock::now();
      for (const auto& m : members) {
        auto old = members_.find(m.id);
        if (old == members_.end() || !(old->second == m)) member_since_[m.id] = now;
      }
      for (auto it = member_since_.begin(); it != member_since_.end();)
        it = next.count(it->first) ? std::next(it) : member_since_.erase(it);
      for (const auto& id : rejected)
        if (!rejected_.count(id))
          std::cerr << "strata: cluster: member " << id
                    << " failed the secret handshake; it owns no directory shard" << std::endl;
      members_ = std::move(next);
      rejected_ = std::move(rejected);
      rejected_checked_ = std::chrono::steady_clock::now();
    }
    std::sort(ids.begin(), ids.end());
    peers_->SetMembers(members);
    shard_->OnMembershipChange(ids);
    (void)client_->OnMembershipChange(ids);  // owners that cannot be reached stay pending
    for (const auto& id : departed) transport_->Disconnect(id);
  }

  void BackgroundLoop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      cv_.wait_for(lock, std::chrono::milliseconds(options_.announce_interval_ms));
      if (stop_) break;
      std::optional<std::vector<transport::Member>> members;
      members.swap(pending_members_);
      lock.unlock();
      if (!members) {
        std::lock_guard<std::mutex> l(mu_);
        if (!rejected_.empty() &&
            std::chrono::steady_clock::now() - rejected_checked_ > kRecheckRejected) {
          members.emplace();
          for (const auto& [id, m] : members_) members->push_back(m);
        }
      }
      if (members) ApplyMembers(*members);
      (void)client_->Flush();  // unreachable owners keep their entries pending: retried next round
      lock.lock();
    }
  }

  void FetchLoop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      cv_.wait(lock, [&] { return stop_ || !fetch_queue_.empty(); });
      if (stop_) break;
      std::vector<BlockKey> keys = std::move(fetch_queue_.front());
      fetch_queue_.pop_front();
      lock.unlock();
      const size_t local = store_->Lookup(keys).prefix_blocks;
      (void)Fetch(keys, local);
      lock.lock();
    }
  }

  // One round of Fetch: pulls rest[i] for each i of `want` from its best holder not yet tried,
  // commits what verified (done[i] = 1), records each block's status in result[i].
  // Placement: a block with room[i] == 0 is placed when its header arrives, on the progress
  // thread, without eviction (TryReserve); one that found no free space there records its
  // length in room[i]. A block with room[i] > 0 gets its reservation here, on the calling
  // thread, evicting (and writing back) as needed, before its pull is posted.
  void PullRound(std::span<const BlockKey> keys, size_t local_prefix,
                 const std::vector<std::vector<std::string>>& holders,
                 const std::vector<size_t>& want, std::vector<std::set<std::string>>& tried,
                 std::vector<Status>& result, std::vector<uint8_t>& done,
                 std::vector<uint64_t>& room);

  // Per pulled block: where its header lands and the host reservation its payload went to.
  struct Landing {
    std::array<std::byte, kBlockHeaderSize> header{};
    std::optional<store::WriteReservation> reservation;
  };

  const ClusterOptions options_;
  store::TieredStore* store_;
  transport::Member self_;
  HostBlockSource source_;  // declared before transport_: outlives it
  std::unique_ptr<transport::DirectoryShard> shard_;
  std::unique_ptr<transport::PeerTransport> transport_;
  std::unique_ptr<transport::TransportDirectoryPeers> peers_;
  std::unique_ptr<transport::DirectoryClient> client_;
  std::unique_ptr<transport::Membership> membership_;
  std::mutex hints_mu_;
  std::unordered_map<BlockKey, Hint, BlockKeyHash> hints_;  // GUARDED_BY(hints_mu_)
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
  std::deque<std::vector<BlockKey>> fetch_queue_;                    // GUARDED_BY(mu_)
  std::thread worker_;
  std::thread fetcher_;

  // When this node saw each member's current registration appear (its "lease age").
  std::map<std::string, Clock::time_point> member_since_;           // GUARDED_BY(mu_)

  std::atomic<uint64_t> added_{0}, evicted_{0}, pulls_{0}, pulled_blocks_{0}, pulled_bytes_{0},
      pull_failures_{0};
  // Fetch's stage profile (StatsJson "fetch_profile"), nanoseconds summed over every Fetch.
  std::atomic<uint64_t> room_retries_{0}, hinted_fetches_{0};
  std::atomic<uint64_t> fetches_{0}, prof_lookup_ns_{0}, prof_prepare_ns_{0}, prof_pull_ns_{0},
      prof_first_data_ns_{0}, prof_verify_ns_{0}, prof_commit_ns_{0};
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
  struct PeerPulls {
    uint64_t ops = 0, blocks = 0, bytes = 0, failures = 0;
    std::deque<PullSample> recent;
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
    if (p.recent.size() > kMaxSamples) p.recent.pop_front();
  }
  void NoteFailures(const std::string& peer, uint64_t failures) {
    std::lock_guard<std::mutex> lock(stats_mu_);
    peer_pulls_[peer].failures += failures;
  }
  std::mutex stats_mu_;
  std::map<std::string, PeerPulls> peer_pulls_;  // GUARDED_BY(stats_mu_)
};

size_t ClusterImpl::Fetch(std::span<const BlockKey> keys, size_t local_prefix) {
  if (local_prefix >= keys.size()) return local_prefix;
  const std::span<const BlockKey> rest = keys.subspan(local_prefix);
  fetches_.fetch_add(1, std::memory_order_relaxed);
  const auto looked_up = Clock::now();
  auto hinted = TakeHints(rest);
  const bool from_hints = hinted.has_value();
  auto holders = from_hints ? std::move(*hinted)
                            : client_->Lookup(std::vector<BlockKey>(rest.begin(), rest.end()));
  AddNs(prof_lookup_ns_, Clock::now() - looked_up);
  if (from_hints) hinted_fetches_.fetch_add(1, std::memory_order_relaxed);
  size_t n = 0;
  while (n < holders.size() && HasPeer(holders[n])) ++n;
  if (n == 0) return local_prefix;

  std::vector<Status> result(n, Status::Unavailable("not pulled"));
  std::vector<uint8_t> done(n, 0);
  std::vector<std::set<std::string>> tried(n);
  std::vector<uint64_t> room(n, 0);
  // Round 0 asks the best holder of each block; round 1 asks another holder for the blocks whose
  // holder answered that it cannot serve them (the directory is a hint: an entry may be stale)
  // or whose connection failed fast, and asks again (any holder) for the blocks that found no
  // free space on arrival: this thread makes room for them first. A timeout is not retried: the
  // bound stays one timeout per round, and a stalled peer costs at most one.
  for (int round = 0; round < 2; ++round) {
    std::vector<size_t> want;
    for (size_t i = 0; i < n; ++i) {
      if (done[i]) continue;
      if (round > 0 && room[i] > 0) {
        tried[i].clear();
        want.push_back(i);
        continue;
      }
      if (round > 0 && (result[i].code() == StatusCode::kTimedOut ||
                        result[i].code() == StatusCode::kResourceExhausted ||
                        result[i].code() == StatusCode::kAlreadyExists))
        continue;
      want.push_back(i);
    }
    if (want.empty()) break;
    const bool stale = std::any_of(want.begin(), want.end(), [&](size_t i) {
      return result[i].code() == StatusCode::kNotFound;
    });
    if (round > 0 && from_hints && stale) {
      // A holder no longer has what the hint named: the second round asks the directory.
      auto fresh = client_->Lookup(std::vector<BlockKey>(rest.begin(), rest.begin() + n));
      for (size_t i = 0; i < n && i < fresh.size(); ++i) holders[i] = std::move(fresh[i]);
    }
    PullRound(keys, local_prefix, holders, want, tried, result, done, room);
  }
  return store_->Lookup(keys).prefix_blocks;
}

void ClusterImpl::PullRound(std::span<const BlockKey> keys, size_t local_prefix,
                            const std::vector<std::vector<std::string>>& holders,
                            const std::vector<size_t>& want,
                            std::vector<std::set<std::string>>& tried,
                            std::vector<Status>& result, std::vector<uint8_t>& done,
                            std::vector<uint64_t>& room) {
  const std::span<const BlockKey> rest = keys.subspan(local_prefix);
  // Holder choice per block: a peer on this host first, then the fewest pulls in flight
  // (counting the blocks this round has already given it), then the id (deterministic).
  std::map<std::string, std::vector<size_t>> by_holder;  // holder -> indices into rest
  std::map<std::string, std::vector<std::byte>> addresses;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::unordered_map<std::string, int> load = in_flight_;
    auto rank = [&](const std::string& id) {
      auto m = members_.find(id);
      const bool same_host = m != members_.end() && m->second.host == self_.host;
      return std::make_tuple(same_host ? 0 : 1, load[id], id);
    };
    for (size_t i : want) {
      const std::string* best = nullptr;
      for (const auto& h : holders[i]) {
        if (h == self_.id || !members_.count(h) || tried[i].count(h)) continue;
        if (best == nullptr || rank(h) < rank(*best)) best = &h;
      }
      if (best == nullptr) continue;  // no (other) live holder
      tried[i].insert(*best);
      ++load[*best];
      by_holder[*best].push_back(i);
      addresses[*best] = members_.at(*best).address;
    }
    for (const auto& [h, idx] : by_holder) in_flight_[h] += static_cast<int>(idx.size());
  }
  if (by_holder.empty()) return;

  const auto preparing = Clock::now();
  std::unordered_map<size_t, Landing> landings;  // by index into rest; stable addresses
  for (const auto& [h, idx] : by_holder)
    for (size_t i : idx) landings[i];
  const size_t max_payload = store_->host().max_payload_bytes();
  std::byte* const payload_base = store_->host().payload_base();
  store::TieredStore* store = store_;
  struct Issued {
    std::string holder;
    std::vector<size_t> indices;
    std::unique_ptr<transport::PullOp> op;
    Clock::time_point posted;
  };
  std::vector<Issued> issued;
  for (auto& [holder, indices] : by_holder) {
    Status connected = transport_->Connect(holder, addresses[holder]);
    if (!connected.ok()) {
      for (size_t i : indices) result[i] = connected;
      NoteFailures(holder, indices.size());
      continue;
    }
    for (size_t start = 0; start < indices.size(); start += wire::kMaxKeysPerMessage) {
      const size_t end = std::min(indices.size(), start + wire::kMaxKeysPerMessage);
      std::vector<transport::PullTarget> targets;
      std::vector<size_t> part(indices.begin() + start, indices.begin() + end);
      std::vector<size_t> placed;
      for (size_t i : part) {
        transport::PullTarget t;
        t.key = rest[i];
        Landing* landing = &landings[i];
        t.header_dest = landing->header.data();
        if (room[i] > 0) {
          // No free space on arrival last round: reserve now, on this thread (evicting and
          // writing back as needed). A cluster node has one tenant (Node::Open), tenant 0.
          auto r = store->host().Reserve(rest[i], room[i], /*tenant=*/0);
          room[i] = 0;
          room_retries_.fetch_add(1, std::memory_order_relaxed);
          if (!r.ok()) {
            result[i] = r.status();
            continue;
          }
          landing->reservation = *r;
          t.dest = payload_base + r->offset;
          t.capacity = r->length;
          targets.push_back(std::move(t));
          placed.push_back(i);
          continue;
        }
        t.capacity = max_payload;
        uint64_t* wanted = &room[i];
        // Runs on the progress thread when the block's header arrives: the payload lands
        // straight in a host-tier reservation of the right length, taken without eviction (no
        // eviction lock, write-back or disk I/O on the progress thread); without free space the
        // block is refused and its length noted for the next round.
        t.allocate = [store, landing, payload_base, wanted](const BlockHeader& h) -> std::byte* {
          auto r =
              store->host().TryReserve(h.key, h.payload_length, store->host().TenantOf(h.ns));
          if (!r.ok()) {
            if (r.status().code() == StatusCode::kNoSpace) *wanted = h.payload_length;
            return nullptr;  // cached meanwhile, no free space, or no tenant known
          }
          landing->reservation = *r;
          return payload_base + r->offset;
        };
        targets.push_back(std::move(t));
        placed.push_back(i);
      }
      part = std::move(placed);
      if (targets.empty()) continue;
      auto op = transport_->PreparePull(holder, NamespaceId{}, std::move(targets));
      if (!op.ok()) {
        for (size_t i : part) result[i] = op.status();
        NoteFailures(holder, part.size());
        continue;
      }
      const Clock::time_point posted_at = Clock::now();
      Status posted = (*op)->Post();
      if (!posted.ok()) {
        for (size_t i : part) result[i] = posted;
        NoteFailures(holder, part.size());
        continue;
      }
      issued.push_back({holder, std::move(part), std::move(op).value(), posted_at});
    }
  }
  pulls_.fetch_add(issued.size(), std::memory_order_relaxed);
  const auto pulling = Clock::now();
  AddNs(prof_prepare_ns_, pulling - preparing);
  double first_data_s = 0;
  for (Issued& is : issued) {
    transport::PullResult r = is.op->Wait();
    AddSeconds(prof_verify_ns_, r.verify_s);
    if (r.first_data_s > 0 && (first_data_s == 0 || r.first_data_s < first_data_s))
      first_data_s = r.first_data_s;
    const double seconds = std::chrono::duration<double>(Clock::now() - is.posted).count();
    uint64_t blocks = 0, bytes = 0, failures = 0;
    for (size_t k = 0; k < is.indices.size(); ++k) {
      const size_t i = is.indices[k];
      if (k < r.blocks.size()) result[i] = r.blocks[k];
      if (result[i].ok() && landings[i].reservation) {
        ++blocks;
        bytes += landings[i].reservation->length;
      } else {
        ++failures;
      }
    }
    NotePull(is.holder, seconds, blocks, bytes, failures);
  }
  const auto committing = Clock::now();
  AddNs(prof_pull_ns_, committing - pulling);
  AddSeconds(prof_first_data_ns_, first_data_s);
  struct CommitTimer {
    std::atomic<uint64_t>& to;
    Clock::time_point from;
    ~CommitTimer() { AddNs(to, Clock::now() - from); }
  } commit_timer{prof_commit_ns_, committing};
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [h, idx] : by_holder) in_flight_[h] -= static_cast<int>(idx.size());
  }
  // Insert what arrived and verified (the transport checked header, key and payload checksum),
  // in chain order so each block's parent is known; free what did not.
  std::vector<size_t> order;
  for (const auto& [i, l] : landings) order.push_back(i);
  std::sort(order.begin(), order.end());
  for (size_t i : order) {
    Landing& l = landings[i];
    if (!l.reservation) {
      if (!result[i].ok()) pull_failures_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (!result[i].ok()) {
      store_->host().Abort(*l.reservation);
      pull_failures_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    auto header = DecodeBlockHeader(l.header);
    if (!header.ok() || header->key != rest[i]) {  // verified already; belt and braces
      store_->host().Abort(*l.reservation);
      result[i] = Status::Corruption("pulled block header changed after verification");
      pull_failures_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    store::PutOptions put;
    const size_t pos = local_prefix + i;
    if (pos > 0) put.parent = &keys[pos - 1];
    Status st = store_->CommitReserved(*l.reservation, *header, put, /*verify=*/false);
    if (st.ok()) {
      done[i] = 1;
      Added(rest[i]);
      pulled_blocks_.fetch_add(1, std::memory_order_relaxed);
      pulled_bytes_.fetch_add(header->payload_length, std::memory_order_relaxed);
    } else {
      result[i] = st;
      pull_failures_.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

}  // namespace

Status ValidateNodeId(std::string_view id, std::string_view what) {
  constexpr size_t kMaxNodeIdBytes = 128;
  auto bad = [&](const std::string& why) {
    std::string shown(id.substr(0, 64));
    for (char& c : shown)
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) c = '?';
    return Status::InvalidArgument(std::string(what) + ": '" + shown + "' " + why);
  };
  if (id.empty()) return bad("is empty");
  if (id.size() > kMaxNodeIdBytes)
    return bad("is longer than " + std::to_string(kMaxNodeIdBytes) + " bytes");
  for (char c : id) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return bad("may hold only letters, digits, '.', '_' and '-'");
  }
  if (id == "." || id.find("..") != std::string_view::npos)
    return bad("may not be '.' or contain '..'");
  return Status::OK();
}

Result<std::unique_ptr<Cluster>> Cluster::Open(const ClusterOptions& options,
                                               store::TieredStore* store) {
  if (options.request_timeout_ms == 0)
    return Status::InvalidArgument("request_timeout_ms must be at least 1");
  auto c = std::make_unique<ClusterImpl>(options, store);
  STRATA_RETURN_IF_ERROR(c->Start());
  return std::unique_ptr<Cluster>(std::move(c));
}

}  // namespace strata
