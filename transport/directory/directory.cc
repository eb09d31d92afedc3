#include "transport/directory/directory.h"

#include <algorithm>

#include "transport/directory/rendezvous.h"

namespace strata::transport {

// ---- DirectoryShard ----

wire::LookupResponse DirectoryShard::Lookup(const wire::LookupRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  wire::LookupResponse resp;
  resp.request_id = request.request_id;
  resp.holders.resize(request.keys.size());
  for (size_t i = 0; i < request.keys.size(); ++i) {
    auto it = holders_.find(request.keys[i]);
    if (it == holders_.end()) continue;
    for (const std::string& h : it->second)
      if (live_.empty() || live_.count(h)) resp.holders[i].push_back(h);
  }
  return resp;
}

Status DirectoryShard::Announce(const wire::Announce& a) {
  if (a.holder_id.empty()) return Status::InvalidArgument("Announce without a holder id");
  std::lock_guard<std::mutex> lock(mu_);
  if (!live_.empty() && !live_.count(a.holder_id))
    return Status::Unavailable("holder " + a.holder_id + " is not a live member");
  if (a.replace) {
    for (auto it = holders_.begin(); it != holders_.end();) {
      it->second.erase(a.holder_id);
      it = it->second.empty() ? holders_.erase(it) : std::next(it);
    }
  }
  for (const BlockKey& k : a.evicted) {
    auto it = holders_.find(k);
    if (it == holders_.end()) continue;
    it->second.erase(a.holder_id);
    if (it->second.empty()) holders_.erase(it);
  }
  for (const BlockKey& k : a.added) holders_[k].insert(a.holder_id);
  return Status::OK();
}

void DirectoryShard::OnMembershipChange(const std::vector<std::string>& member_ids) {
  std::lock_guard<std::mutex> lock(mu_);
  members_ = member_ids;
  live_ = std::unordered_set<std::string>(member_ids.begin(), member_ids.end());
  for (auto it = holders_.begin(); it != holders_.end();) {
    for (auto h = it->second.begin(); h != it->second.end();)
      h = live_.count(*h) ? std::next(h) : it->second.erase(h);
    // Keys whose shard moved to another member are that member's now.
    const bool moved = RendezvousOwner(it->first, members_) != self_;
    it = (it->second.empty() || moved) ? holders_.erase(it) : std::next(it);
  }
}

size_t DirectoryShard::entries() const {
  std::lock_guard<std::mutex> lock(mu_);
  return holders_.size();
}

// ---- DirectoryClient ----

DirectoryClient::DirectoryClient(DirectoryClientOptions options, DirectoryShard* shard,
                                 DirectoryPeers* peers)
    : options_(std::move(options)), shard_(shard), peers_(peers) {
  members_ = {options_.self_id};
}

std::string DirectoryClient::OwnerOf(const BlockKey& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  return RendezvousOwner(key, members_);
}

void DirectoryClient::Added(const BlockKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  held_.insert(key);
  pending_evict_.erase(key);
  pending_add_.insert(key);
}

void DirectoryClient::Evicted(const BlockKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  held_.erase(key);
  pending_add_.erase(key);
  pending_evict_.insert(key);
}

Status DirectoryClient::Send(const std::string& owner, wire::Announce announce) {
  announce.holder_id = options_.self_id;
  if (owner == options_.self_id) return shard_->Announce(announce);
  return peers_->Announce(owner, std::move(announce));
}

Status DirectoryClient::Flush() {
  std::map<std::string, wire::Announce> batches;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const BlockKey& k : pending_add_) batches[RendezvousOwner(k, members_)].added.push_back(k);
    for (const BlockKey& k : pending_evict_)
      batches[RendezvousOwner(k, members_)].evicted.push_back(k);
    pending_add_.clear();
    pending_evict_.clear();
  }
  Status first;
  for (auto& [owner, all] : batches) {
    // Split into messages of at most batch_keys keys.
    size_t ai = 0, ei = 0;
    while (ai < all.added.size() || ei < all.evicted.size()) {
      wire::Announce a;
      while (ai < all.added.size() && a.added.size() < options_.batch_keys)
        a.added.push_back(all.added[ai++]);
      while (ei < all.evicted.size() && a.added.size() + a.evicted.size() < options_.batch_keys)
        a.evicted.push_back(all.evicted[ei++]);
      wire::Announce copy = a;
      Status st = Send(owner, std::move(a));
      if (!st.ok()) {
        // Keep them for the next Flush (unless superseded since).
        std::lock_guard<std::mutex> lock(mu_);
        for (const BlockKey& k : copy.added)
          if (held_.count(k)) pending_add_.insert(k);
        for (const BlockKey& k : copy.evicted)
          if (!held_.count(k)) pending_evict_.insert(k);
        if (first.ok()) first = st.WithContext("announce to " + owner);
      }
    }
  }
  return first;
}

std::vector<std::vector<std::string>> DirectoryClient::Lookup(const std::vector<BlockKey>& chain) {
  std::map<std::string, std::vector<size_t>> by_owner;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < chain.size(); ++i)
      by_owner[RendezvousOwner(chain[i], members_)].push_back(i);
  }
  std::vector<std::vector<std::string>> out(chain.size());
  for (auto& [owner, idx] : by_owner) {
    wire::LookupRequest req;
    for (size_t i : idx) req.keys.push_back(chain[i]);
    Result<wire::LookupResponse> resp = owner == options_.self_id
                                            ? Result<wire::LookupResponse>(shard_->Lookup(req))
                                            : peers_->Lookup(owner, req.keys);
    if (!resp.ok() || resp->holders.size() != idx.size()) continue;  // a hint: unknown
    for (size_t j = 0; j < idx.size(); ++j) out[idx[j]] = std::move(resp->holders[j]);
  }
  return out;
}

Status DirectoryClient::OnMembershipChange(const std::vector<std::string>& member_ids) {
  std::vector<std::string> sorted = member_ids;
  std::sort(sorted.begin(), sorted.end());
  std::map<std::string, std::vector<BlockKey>> by_owner;
  {
    std::lock_guard<std::mutex> lock(mu_);
    members_ = sorted;
    if (members_.empty()) members_ = {options_.self_id};
    for (const BlockKey& k : held_) by_owner[RendezvousOwner(k, members_)].push_back(k);
    pending_add_.clear();  // the full re-announce below covers them
  }
  shard_->OnMembershipChange(sorted);
  Status first;
  // Every live owner hears our full list for its shards, even an empty one (replace drops what
  // it had from us).
  for (const std::string& owner : sorted) {
    const auto& keys = by_owner[owner];
    size_t i = 0;
    bool first_batch = true;
    do {
      wire::Announce a;
      a.replace = first_batch;
      first_batch = false;
      while (i < keys.size() && a.added.size() < options_.batch_keys) a.added.push_back(keys[i++]);
      Status st = Send(owner, std::move(a));
      if (!st.ok() && first.ok()) first = st.WithContext("re-announce to " + owner);
      if (!st.ok()) break;
    } while (i < keys.size());
  }
  return first;
}

}  // namespace strata::transport
