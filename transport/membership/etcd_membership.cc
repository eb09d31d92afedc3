#include "transport/membership/etcd_membership.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "transport/membership/etcd_client.h"

namespace strata::transport {

std::string EncodeMemberValue(const Member& m) {
  nlohmann::json j = {{"id", m.id}, {"address", Base64Encode(m.address)}, {"host", m.host}};
  if (!m.listen_addr.empty()) j["listen_addr"] = m.listen_addr;
  if (!m.socket.empty()) j["socket"] = m.socket;
  if (!m.inspect_addr.empty()) j["inspect_addr"] = m.inspect_addr;
  if (!m.version.empty()) j["version"] = m.version;
  return j.dump();
}

Result<Member> DecodeMemberValue(const std::string& value) {
  auto j = nlohmann::json::parse(value, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("id") || !j["id"].is_string() ||
      !j.contains("address") || !j["address"].is_string())
    return Status::Corruption("member value is not {\"id\", \"address\", ...} JSON");
  Member m;
  m.id = j["id"].get<std::string>();
  auto addr = Base64Decode(j["address"].get<std::string>());
  if (!addr.ok()) return addr.status().WithContext("member " + m.id + " address");
  m.address = std::move(*addr);
  auto text = [&](const char* field, std::string* out) {
    if (j.contains(field) && j[field].is_string()) *out = j[field].get<std::string>();
  };
  text("host", &m.host);
  text("listen_addr", &m.listen_addr);
  text("socket", &m.socket);
  text("inspect_addr", &m.inspect_addr);
  text("version", &m.version);
  if (m.id.empty()) return Status::Corruption("member value has an empty id");
  return m;
}

struct EtcdMembership::Impl {
  EtcdMembershipOptions options;
  EtcdClient client{options.endpoint, options.call_timeout};
  std::atomic<bool> stop{false};
  std::thread keepalive_thread;
  std::thread watch_thread;
  std::mutex stop_mu;
  std::condition_variable stop_cv;

  mutable std::mutex mu;
  std::map<std::string, Member> members;  // GUARDED_BY(mu), by etcd key
  Listener listener;                      // GUARDED_BY(mu)
  int64_t lease = 0;                      // keep-alive thread only

  explicit Impl(EtcdMembershipOptions o) : options(std::move(o)) {}

  std::string SelfKey() const { return options.prefix + options.self.id; }

  Status Register() {
    STRATA_ASSIGN_OR_RETURN(lease, client.GrantLease(options.lease_ttl.count()));
    return client.Put(SelfKey(), EncodeMemberValue(options.self), lease);
  }

  std::vector<Member> Snapshot() const {
    std::vector<Member> out;
    for (const auto& [k, m] : members) out.push_back(m);
    std::sort(out.begin(), out.end(), [](const Member& a, const Member& b) { return a.id < b.id; });
    return out;
  }

  void Notify() {
    Listener l;
    std::vector<Member> snap;
    {
      std::lock_guard<std::mutex> lock(mu);
      l = listener;
      snap = Snapshot();
    }
    if (l) l(snap);
  }

  // Replaces the member map with a fresh range; returns the revision to watch from.
  Result<int64_t> Reload() {
    int64_t revision = 0;
    STRATA_ASSIGN_OR_RETURN(auto kvs, client.RangePrefix(options.prefix, &revision));
    std::map<std::string, Member> fresh;
    for (const auto& kv : kvs) {
      auto m = DecodeMemberValue(kv.value);
      if (m.ok()) fresh[kv.key] = std::move(*m);  // a malformed entry is not a member
    }
    bool changed;
    {
      std::lock_guard<std::mutex> lock(mu);
      changed = fresh != members;
      members = std::move(fresh);
    }
    if (changed) Notify();
    return revision + 1;
  }

  void OnEvent(const EtcdEvent& e) {
    bool changed = false;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (e.deleted) {
        changed = members.erase(e.kv.key) > 0;
      } else if (auto m = DecodeMemberValue(e.kv.value); m.ok()) {
        auto it = members.find(e.kv.key);
        changed = it == members.end() || !(it->second == *m);
        members[e.kv.key] = std::move(*m);
      }
    }
    if (changed) Notify();
  }

  // Sleeps up to `d`; false when asked to stop.
  bool SleepFor(std::chrono::milliseconds d) {
    std::unique_lock<std::mutex> lock(stop_mu);
    return !stop_cv.wait_for(lock, d, [this] { return stop.load(); });
  }

  void KeepAliveLoop() {
    const auto period =
        std::chrono::duration_cast<std::chrono::milliseconds>(options.lease_ttl) / 3;
    while (SleepFor(period)) {
      auto ttl = client.KeepAlive(lease);
      if (ttl.ok()) continue;
      if (ttl.status().IsNotFound()) (void)Register();  // the lease expired: join again
    }
  }

  void WatchLoop(int64_t revision) {
    while (!stop.load()) {
      Status st = client.WatchPrefix(
          options.prefix, revision, [this](const EtcdEvent& e) { OnEvent(e); }, stop);
      if (stop.load()) return;
      (void)st;
      if (!SleepFor(std::chrono::milliseconds(200))) return;
      auto r = Reload();
      if (r.ok()) revision = *r;
    }
  }
};

EtcdMembership::EtcdMembership(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

EtcdMembership::~EtcdMembership() {
  {
    std::lock_guard<std::mutex> lock(impl_->stop_mu);
    impl_->stop = true;
  }
  impl_->stop_cv.notify_all();
  if (impl_->keepalive_thread.joinable()) impl_->keepalive_thread.join();
  if (impl_->watch_thread.joinable()) impl_->watch_thread.join();
  if (impl_->lease != 0) (void)impl_->client.RevokeLease(impl_->lease);
}

Result<std::unique_ptr<EtcdMembership>> EtcdMembership::Open(EtcdMembershipOptions options) {
  if (options.self.id.empty()) return Status::InvalidArgument("etcd membership: empty node id");
  if (options.lease_ttl.count() < 1)
    return Status::InvalidArgument("etcd membership: lease TTL must be >= 1 s");
  auto impl = std::make_unique<Impl>(std::move(options));
  STRATA_RETURN_IF_ERROR(impl->Register());
  STRATA_ASSIGN_OR_RETURN(int64_t revision, impl->Reload());
  Impl* raw = impl.get();
  raw->keepalive_thread = std::thread([raw] { raw->KeepAliveLoop(); });
  raw->watch_thread = std::thread([raw, revision] { raw->WatchLoop(revision); });
  return std::unique_ptr<EtcdMembership>(new EtcdMembership(std::move(impl)));
}

std::vector<Member> EtcdMembership::Members() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->Snapshot();
}

void EtcdMembership::SetListener(Listener listener) {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->listener = std::move(listener);
  }
  impl_->Notify();
}

}  // namespace strata::transport
