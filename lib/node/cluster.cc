// Cluster over transport/ (PeerTransport, membership, directory) and the host tier. See cluster.h;
// cluster_impl.h lists the files that implement it.
#include "node/cluster.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>

#include <nlohmann/json.hpp>

#include "node/cluster_impl.h"
#include "strata/version.h"
#include "transport/membership/etcd_client.h"
#include "transport/membership/etcd_membership.h"
#include "transport/wire/auth.h"

namespace strata {
namespace {

std::string HostName() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  return buf;
}

}  // namespace

Status ClusterImpl::Start() {
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
  self_.inspect_addr = options_.inspect_addr;
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
  // The host pool's payload range, one UCX registration per slab, so that a slab renewed for
  // another tenant is registered again alone (the listener below).
  to.regions.push_back(
      {store_->host().base(), store_->host().size(), store_->host().slab_bytes()});
  to.request_timeout = std::chrono::milliseconds(options_.request_timeout_ms);
  to.data_peer_errors = options_.ucx_peer_errors;
  to.pull_coalesce_bytes = options_.pull_coalesce_bytes;
  to.mapped_pulls = options_.pull_mapped;
  if (const char* d = std::getenv("STRATA_TEST_MAPPED_COPY_DELAY_MS"))  // tests only
    to.mapped_copy_delay_for_test = std::chrono::milliseconds(std::atoi(d));
  if (options_.progress_spin_rounds) to.progress_spin_rounds = *options_.progress_spin_rounds;
  to.block_source = &source_;
  to.directory = shard_.get();
  auto transport = transport::PeerTransport::Open(std::move(to));
  if (!transport.ok()) return transport.status().WithContext("cluster transport");
  transport_ = std::move(transport).value();
  // Added before membership starts (the first pull may lend a slab to another tenant): a slab
  // that gets fresh memory is registered again before any block lands in it or leaves it.
  renewal_listener_ = store_->host().AddSlabRenewedListener(
      [t = transport_.get()](uint32_t slab, std::byte* base, uint64_t) {
        if (Status st = t->ReregisterUnit(base); !st.ok())
          std::cerr << "strata: cluster: host slab " << slab
                    << " has no UCX registration now (UCX registers per transfer): "
                    << st.ToString() << std::endl;
      });
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
  // Blocks the disk tier kept across a restart (the store reports no event for them): held from
  // the start, announced with the first member list.
  if (store_->disk() != nullptr)
    for (const BlockKey& k : store_->disk()->Keys(std::nullopt))
      TierChanged(store::TierKind::kDisk, k, /*added=*/true);
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

std::string ClusterImpl::StatsJson() {
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
  // Peers' pulls of blocks held only on the disk (or device) tier: promoted into host to serve
  // them, and those that could not be (answered NotFound; the puller asks another holder).
  j["served_promotions"] = source_.promoted();
  j["served_promotion_failures"] = source_.promotion_failures();
  j["refused_blocks"] = source_.refused();  // private tenants' blocks asked for by key alone
  // Host slabs registered with UCX again after they got fresh memory for another tenant.
  j["slabs_reregistered"] = transport_->units_reregistered();
  j["endpoint_flushing_closes"] = transport_->flushing_closes();
  // Per peer: this node's pulls from it (counters) and their time, as histogram buckets.
  nlohmann::json peers = nlohmann::json::object();
  {
    std::lock_guard<std::mutex> lock(stats_mu_);
    for (const auto& [id, p] : peer_pulls_) {
      nlohmann::json counts = nlohmann::json::array();
      uint64_t cum = 0;
      for (uint64_t c : p.buckets) counts.push_back(cum += c);
      peers[id] = {{"pulls", p.ops}, {"pulled_blocks", p.blocks}, {"pulled_bytes", p.bytes},
                   {"pull_failures", p.failures},
                   {"pull_seconds", {{"le", kPullBounds}, {"cumulative", counts},
                                     {"sum", p.seconds}}}};
    }
  }
  j["peers"] = std::move(peers);
  // Pulled blocks that found no free space on arrival and were pulled again into room made on
  // the fetch thread (eviction never runs on the progress thread).
  j["pull_room_retries"] = room_retries_.load();
  // Fetches that pulled from known holders (a client Lookup's answer, an earlier directory
  // answer or verified pull, younger than holder_memory_ms) without a directory lookup.
  j["hinted_fetches"] = hinted_fetches_.load();
  // Read-aheads queued for streamed Loads, and Fetches that waited for another's pull of the
  // same blocks (a read-ahead's) instead of pulling them twice.
  j["read_aheads"] = read_aheads_.load();
  j["pulling_waits"] = pulling_waits_.load();
  // Pulls a client Lookup started (pull_on_lookup).
  j["pulls_on_lookup"] = pulls_on_lookup_.load();
  // Client Lookups answered from remembered holders without the directory (holder_memory_ms),
  // and remembered keys forgotten because a pull of them failed.
  j["remembered_lookups"] = remembered_lookups_.load();
  j["holders_forgotten"] = holders_forgotten_.load();
  // Where Fetch's time went, summed over every Fetch (docs/cluster.md, "Where a pull's time
  // goes"): the directory lookup, connecting and preparing, the pulls (post to the last
  // block), of which the first block's wait and the progress thread's verification, and the
  // commit to the host tier; each Fetch whole (fetch_s); and the directory part of client
  // Lookups (remote_lookup_s: RemotePrefix asking the shard owners).
  auto secs = [](const std::atomic<uint64_t>& ns) { return double(ns.load()) / 1e9; };
  j["fetch_profile"] = {{"fetches", fetches_.load()},
                        {"lookup_s", secs(prof_lookup_ns_)},
                        {"prepare_s", secs(prof_prepare_ns_)},
                        {"pull_s", secs(prof_pull_ns_)},
                        {"first_data_s", secs(prof_first_data_ns_)},
                        {"verify_s", secs(prof_verify_ns_)},
                        {"commit_s", secs(prof_commit_ns_)},
                        {"fetch_s", secs(prof_fetch_ns_)},
                        {"remote_lookups", remote_lookups_.load()},
                        {"remote_lookup_s", secs(prof_remote_lookup_ns_)}};
  // The transport's own account, both sides: this node's pull requests (blocks per request,
  // most in flight at once) and its serving of its peers' pulls (pinning, handling each
  // request, the sends from queued to complete, most in flight at once).
  const transport::TransferProfile tp = transport_->Profile();
  nlohmann::json& profile = j["transfer_profile"] = nlohmann::json::object();
  tp.ForEachField([&](const char* name, auto value) { profile[name] = value; });
  return j.dump();
}

std::string ClusterImpl::PeersJson() {
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
    p["inspect_addr"] = text(m.inspect_addr);
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

Status ClusterImpl::CheckMembership() {
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

// New member list: addresses for the directory's connections, shards move, held keys are
// re-announced, sessions with departed peers dropped. A member that fails the secret handshake
// (either side refuses the other's proof) stays a member, since etcd or the static directory
// lists it, but owns no directory shard: the shards are spread over the members this node
// shares the secret with. Rejected members are tried again every kRecheckRejected.
void ClusterImpl::ApplyMembers(const std::vector<transport::Member>& members) {
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

void ClusterImpl::BackgroundLoop() {
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
