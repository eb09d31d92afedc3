// Cluster fetching: lookups, holder hints and ranking, pulls, placement, commit (cluster_impl.h).
#include <algorithm>

#include "node/cluster_impl.h"

namespace strata {

size_t ClusterImpl::RemotePrefix(std::span<const BlockKey> chain, size_t local) {
  if (local >= chain.size()) return 0;
  const std::span<const BlockKey> keys = chain.subspan(local);
  if (remembering()) {
    // Every block beyond the local prefix has a live holder this node learned of lately: the
    // answer needs no directory round trip (one thread hop and a tcp crossing each way).
    if (auto recalled = Recall(keys)) {
      remembered_lookups_.fetch_add(1, std::memory_order_relaxed);
      NoteChain(chain);
      return keys.size();
    }
  }
  const auto asked = Clock::now();
  auto holders = client_->Lookup(std::vector<BlockKey>(keys.begin(), keys.end()));
  remote_lookups_.fetch_add(1, std::memory_order_relaxed);
  AddNs(prof_remote_lookup_ns_, Clock::now() - asked);
  size_t n = 0;
  while (n < holders.size() && HasPeer(holders[n])) ++n;
  Remember(keys.first(n), holders);
  if (n > 0) NoteChain(chain.first(local + n));
  return n;
}

void ClusterImpl::NoteChain(std::span<const BlockKey> chain) {
  const auto now = Clock::now();
  auto shared = std::make_shared<const std::vector<BlockKey>>(chain.begin(), chain.end());
  std::lock_guard<std::mutex> lock(hints_mu_);
  if (chains_.size() + chain.size() > kMaxHints) chains_.clear();
  for (size_t i = 0; i < chain.size(); ++i) chains_[chain[i]] = ChainPlace{shared, i, now};
}

std::optional<ClusterImpl::ChainPlace> ClusterImpl::FindChain(const BlockKey& key) {
  std::lock_guard<std::mutex> lock(hints_mu_);
  auto it = chains_.find(key);
  if (it == chains_.end() || Clock::now() - it->second.at > kChainTtl) return std::nullopt;
  return it->second;
}

void ClusterImpl::ReadAhead(std::span<const BlockKey> keys, const NamespaceId& ns) {
  if (keys.empty() || !options_.pull_read_ahead.value_or(true)) return;  // false: never
  auto place = FindChain(keys.back());
  if (!place) return;
  const std::vector<BlockKey>& chain = *place->chain;
  const size_t begin = place->pos + 1;
  if (begin >= chain.size()) return;
  const size_t end = std::min(chain.size(), begin + keys.size());
  if (!options_.pull_read_ahead.has_value()) {
    // Auto: not when the next chunk comes from a same-host holder whose pool this node maps
    // (holder choice puts such a peer first; a mapped copy is not a wire transfer to overlap).
    if (auto known = Known(std::span<const BlockKey>(&chain[begin], 1)))
      for (const std::string& h : (*known)[0])
        if (transport_->MapsPoolOf(h)) return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const FetchJob& j : fetch_queue_)
      if (!j.keys.empty() && j.keys.front() == chain[begin]) return;  // queued already
    fetch_queue_.push_back({std::vector<BlockKey>(chain.begin() + begin, chain.begin() + end), ns});
  }
  read_aheads_.fetch_add(1, std::memory_order_relaxed);
  cv_.notify_all();
}

bool ClusterImpl::MarkPulling(std::span<const BlockKey> keys) {
  std::unique_lock<std::mutex> lock(pulling_mu_);
  auto busy = [&] {
    for (const BlockKey& k : keys)
      if (pulling_.count(k)) return true;
    return false;
  };
  const bool waited = busy();
  if (waited) {
    pulling_waits_.fetch_add(1, std::memory_order_relaxed);
    // The other Fetch is bounded by its request timeouts (two rounds); past that, pull anyway.
    (void)pulling_cv_.wait_for(lock, 2 * std::chrono::milliseconds(options_.request_timeout_ms),
                               [&] { return !busy(); });
  }
  for (const BlockKey& k : keys) ++pulling_[k];
  return waited;
}

bool ClusterImpl::TryMarkPulling(std::span<const BlockKey> keys) {
  std::lock_guard<std::mutex> lock(pulling_mu_);
  for (const BlockKey& k : keys)
    if (pulling_.count(k)) return false;
  for (const BlockKey& k : keys) ++pulling_[k];
  return true;
}

void ClusterImpl::PullOnLookup(std::span<const BlockKey> keys, size_t n,
                               const std::optional<NamespaceId>& ns) {
  if (!options_.pull_on_lookup || n == 0) return;
  const std::span<const BlockKey> first =
      keys.first(std::min({n, keys.size(), kPullOnLookupBlocks}));
  if (!TryMarkPulling(first)) return;  // pulling already (an earlier Lookup's, a Load's)
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Ahead of queued prefetches and read-aheads: a Load is about to wait for it.
    fetch_queue_.push_front({std::vector<BlockKey>(first.begin(), first.end()),
                             ns.value_or(NamespaceId{}), /*marked=*/true});
  }
  pulls_on_lookup_.fetch_add(1, std::memory_order_relaxed);
  cv_.notify_all();
}

void ClusterImpl::UnmarkPulling(std::span<const BlockKey> keys) {
  {
    std::lock_guard<std::mutex> lock(pulling_mu_);
    for (const BlockKey& k : keys) {
      auto it = pulling_.find(k);
      if (it != pulling_.end() && --it->second == 0) pulling_.erase(it);
    }
  }
  pulling_cv_.notify_all();
}

uint16_t ClusterImpl::InternHolder(const std::string& holder) {
  auto [it, added] = holder_ids_.try_emplace(holder, static_cast<uint16_t>(holder_names_.size()));
  if (added) holder_names_.push_back(holder);
  return it->second;
}

void ClusterImpl::ClearKnownIfFull(size_t adding) {
  // Names grow only with member ids never seen before (a batch adds at most its distinct
  // holders, far fewer than the 2^16 - kMaxHolderNames ids left); they empty with the map that
  // refers to them.
  if (known_.size() + adding <= kMaxHints && holder_names_.size() < kMaxHolderNames) return;
  known_.clear();
  holder_names_.clear();
  holder_ids_.clear();
}

void ClusterImpl::Remember(std::span<const BlockKey> keys,
                           const std::vector<std::vector<std::string>>& h) {
  if (!remembering()) return;
  const auto now = Clock::now();
  const size_t n = std::min(keys.size(), h.size());
  std::lock_guard<std::mutex> lock(hints_mu_);
  ClearKnownIfFull(n);
  for (size_t i = 0; i < n; ++i) {
    KnownHolders k;
    k.at = now;
    for (const std::string& holder : h[i]) {
      if (k.n == kMaxKnownHolders) break;
      k.ids[k.n++] = InternHolder(holder);
    }
    known_[keys[i]] = k;
  }
}

std::optional<std::vector<std::vector<std::string>>> ClusterImpl::Known(
    std::span<const BlockKey> keys) {
  if (!remembering()) return std::nullopt;
  const auto now = Clock::now();
  const auto ttl = std::chrono::milliseconds(options_.holder_memory_ms);
  std::vector<std::vector<std::string>> out;
  out.reserve(keys.size());
  std::lock_guard<std::mutex> lock(hints_mu_);
  for (const BlockKey& key : keys) {
    auto it = known_.find(key);
    if (it == known_.end() || now - it->second.at > ttl) return std::nullopt;
    std::vector<std::string>& holders = out.emplace_back();
    for (size_t j = 0; j < it->second.n; ++j) holders.push_back(holder_names_[it->second.ids[j]]);
  }
  return out;
}

std::optional<std::vector<std::vector<std::string>>> ClusterImpl::Recall(
    std::span<const BlockKey> keys) {
  auto out = Known(keys);
  if (!out) return std::nullopt;
  // Only holders that are members now: one that left is not asked (the directory would not
  // name it either).
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& holders : *out) {
    std::erase_if(holders,
                  [&](const std::string& h) { return h == self_.id || !members_.count(h); });
    if (holders.empty()) return std::nullopt;
  }
  return out;
}

void ClusterImpl::RememberServed(const BlockKey& key, const std::string& holder) {
  if (!remembering()) return;
  const auto now = Clock::now();
  std::lock_guard<std::mutex> lock(hints_mu_);
  ClearKnownIfFull(1);
  KnownHolders k;
  k.at = now;
  k.ids[k.n++] = InternHolder(holder);
  known_[key] = k;
}

void ClusterImpl::Forget(const BlockKey& key) {
  std::lock_guard<std::mutex> lock(hints_mu_);
  if (known_.erase(key) > 0) holders_forgotten_.fetch_add(1, std::memory_order_relaxed);
}

void ClusterImpl::FetchLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait(lock, [&] { return stop_ || !fetch_queue_.empty(); });
    if (stop_) break;
    FetchJob job = std::move(fetch_queue_.front());
    fetch_queue_.pop_front();
    lock.unlock();
    const size_t local = store_->Lookup(job.keys).prefix_blocks;
    if (job.marked) {
      (void)FetchMarked(job.keys, local, job.ns);
      UnmarkPulling(job.keys);
    } else {
      (void)Fetch(job.keys, local, job.ns);
    }
    lock.lock();
  }
}

size_t ClusterImpl::Fetch(std::span<const BlockKey> keys, size_t local_prefix,
                          const NamespaceId& ns) {
  if (local_prefix >= keys.size()) return local_prefix;
  struct FetchTimer {
    std::atomic<uint64_t>& to;
    Clock::time_point from;
    ~FetchTimer() { AddNs(to, Clock::now() - from); }
  } fetch_timer{prof_fetch_ns_, Clock::now()};
  // A block another Fetch is pulling now (a read-ahead) is waited for, not pulled twice.
  const std::span<const BlockKey> marked = keys.subspan(local_prefix);
  if (MarkPulling(marked))
    local_prefix = std::max(local_prefix, store_->Lookup(keys).prefix_blocks);
  struct Unmark {
    ClusterImpl* self;
    std::span<const BlockKey> keys;
    ~Unmark() { self->UnmarkPulling(keys); }
  } unmark{this, marked};
  return FetchMarked(keys, local_prefix, ns);
}

size_t ClusterImpl::FetchMarked(std::span<const BlockKey> keys, size_t local_prefix,
                                const NamespaceId& ns) {
  if (local_prefix >= keys.size()) return local_prefix;
  const std::span<const BlockKey> rest = keys.subspan(local_prefix);
  // The block before keys[0] in the chain a client looked up: keys[0]'s parent (a chunk of a
  // streamed Load, a read-ahead).
  std::optional<BlockKey> first_parent;
  if (auto place = FindChain(keys[0]); place && place->pos > 0)
    first_parent = (*place->chain)[place->pos - 1];
  fetches_.fetch_add(1, std::memory_order_relaxed);
  const auto looked_up = Clock::now();
  // Known holders that are live members other than this node, for every key, or the directory.
  auto hinted = Recall(rest);
  const bool from_hints = hinted.has_value();
  auto holders = from_hints ? std::move(*hinted)
                            : client_->Lookup(std::vector<BlockKey>(rest.begin(), rest.end()));
  AddNs(prof_lookup_ns_, Clock::now() - looked_up);
  if (from_hints) hinted_fetches_.fetch_add(1, std::memory_order_relaxed);
  size_t n = 0;
  while (n < holders.size() && HasPeer(holders[n])) ++n;
  if (!from_hints) Remember(rest.first(n), holders);
  if (n == 0) return local_prefix;

  std::vector<Status> result(n, Status::Unavailable("not pulled"));
  std::vector<uint8_t> done(n, 0);
  std::vector<std::set<std::string>> tried(n);
  std::vector<uint64_t> room(n, 0);
  std::vector<uint16_t> room_tenant(n, store::kNoTenant);  // the tenant of a block in room
  // Round 0 asks the best holder of each block; round 1 asks another holder for the blocks whose
  // holder answered that it cannot serve them (the directory is a hint: an entry may be stale)
  // or whose connection failed fast, and asks again (any holder) for the blocks that found no
  // free space on arrival: this thread makes room for them first. A timeout is not retried: the
  // bound stays one timeout per round, and a stalled peer costs at most one.
  // Blocks of this prefix committed in round 0 are held (reader references) while round 1 makes
  // room, so that room for the rest is not made by evicting them.
  std::vector<store::PinnedBlock> held;
  for (int round = 0; round < 2; ++round) {
    if (round > 0 && std::any_of(room.begin(), room.end(), [](uint64_t r) { return r > 0; }))
      for (size_t i = 0; i < n; ++i)
        if (done[i])
          if (auto b = store_->host().Acquire(rest[i]); b.ok()) held.push_back(std::move(b).value());
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
                        result[i].code() == StatusCode::kPermissionDenied ||
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
      // Not remembered: the directory may still name the holder that has just refused (its
      // eviction not announced yet).
    }
    PullRound(keys, local_prefix, ns, first_parent ? &*first_parent : nullptr, holders, want,
              tried, result, done, room, room_tenant);
  }
  return store_->Lookup(keys).prefix_blocks;
}

void ClusterImpl::PullRound(std::span<const BlockKey> keys, size_t local_prefix,
                            const NamespaceId& ns, const BlockKey* first_parent,
                            const std::vector<std::vector<std::string>>& holders,
                            const std::vector<size_t>& want,
                            std::vector<std::set<std::string>>& tried,
                            std::vector<Status>& result, std::vector<uint8_t>& done,
                            std::vector<uint64_t>& room, std::vector<uint16_t>& room_tenant) {
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
          // writing back as needed), in a slab of the tenant of the namespace the block's header
          // named then (a tenant's bytes never land in another tenant's slab).
          auto r = store->host().Reserve(rest[i], room[i], room_tenant[i]);
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
        uint16_t* wanted_tenant = &room_tenant[i];
        // Runs on the progress thread when the block's header arrives: the payload lands
        // straight in a host-tier reservation of the right length, taken without eviction (no
        // eviction lock, write-back or disk I/O on the progress thread); without free space the
        // block is refused and its length noted for the next round.
        t.allocate = [store, landing, payload_base, wanted,
                      wanted_tenant](const BlockHeader& h) -> std::byte* {
          const uint16_t tenant = store->host().TenantOf(h.ns);
          auto r = store->host().TryReserve(h.key, h.payload_length, tenant);
          if (!r.ok()) {
            if (r.status().code() == StatusCode::kNoSpace) {
              *wanted = h.payload_length;
              *wanted_tenant = tenant;
            }
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
      auto op = transport_->PreparePull(holder, ns, std::move(targets));
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
    // Places UCX may still write (the pull failed with their bytes landing): freed when UCX
    // reports them, never reused before; the block fails.
    for (uint32_t k : r.held) {
      if (k >= is.indices.size()) continue;
      Landing& l = landings[is.indices[k]];
      if (!l.reservation) continue;
      is.op->ReleaseHeld(
          k, [store, reservation = *l.reservation] { store->host().Abort(reservation); });
      l.reservation.reset();
    }
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
  // A holder that served a block verified is remembered for it; a pull that failed (the
  // holder no longer has it, died, lied, or this node had no room) forgets the key, so that
  // the next Lookup or Fetch of it asks the directory.
  for (const auto& [h, idx] : by_holder)
    for (size_t i : idx) {
      if (result[i].ok() && landings[i].reservation)
        RememberServed(rest[i], h);
      else
        Forget(rest[i]);
    }
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
    put.parent = pos > 0 ? &keys[pos - 1] : first_parent;
    Status st = store_->CommitReserved(*l.reservation, *header, put, /*verify=*/false);
    if (st.ok()) {
      done[i] = 1;  // announced through TierChanged (the host tier gained it)
      pulled_blocks_.fetch_add(1, std::memory_order_relaxed);
      pulled_bytes_.fetch_add(header->payload_length, std::memory_order_relaxed);
    } else {
      result[i] = st;
      pull_failures_.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

}  // namespace strata
