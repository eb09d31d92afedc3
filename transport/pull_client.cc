// PeerTransport pulls: prepare, post, land, verify (peer_transport_impl.h).
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <limits>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "strata/block_format.h"
#include "transport/peer_transport_impl.h"

namespace strata::transport {

size_t PullResult::LeadingOk() const {
  size_t n = 0;
  while (n < blocks.size() && blocks[n].ok()) ++n;
  return n;
}

void PeerTransport::Impl::MaybeFinish(const std::shared_ptr<PullOp::State>& pull) {
  // A copy: callers pass the very shared_ptr that `pulls` holds (it->second), which the erase
  // below destroys; the promise and verify_mu are used after it.
  const std::shared_ptr<PullOp::State> p = pull;
  if (p->finished) return;
  // A failed pull ends at once, receives outstanding or not: their places are held (below).
  const bool done = p->unsettled == 0 || !p->failure.ok();
  if (!done) return;
  p->finished = true;
  PullResult r;
  r.blocks = std::move(p->status);
  for (size_t i = 0; i < r.blocks.size(); ++i) {
    if (!p->settled[i]) r.blocks[i] = p->failure;
    if (p->in_ucx[i] == 0) continue;
    // UCX may still write this place: the block fails, and its place waits for UCX's report.
    if (r.blocks[i].ok()) r.blocks[i] = Status::Aborted("pull ended while its bytes were landing");
    r.held.push_back(static_cast<uint32_t>(i));
  }
  if (!r.held.empty()) {
    held_pulls[p->request_id] = p;
    prof.held_blocks.fetch_add(r.held.size(), std::memory_order_relaxed);
  }
  const auto now = Clock::now();
  if (p->first_data != Clock::time_point{})
    r.first_data_s = std::chrono::duration<double>(p->first_data - p->posted_at).count();
  if (p->posted_at != Clock::time_point{})
    r.last_data_s = std::chrono::duration<double>(now - p->posted_at).count();
  pulls.erase(p->request_id);
  p->promise.set_value(std::move(r));
  {
    std::lock_guard<std::mutex> lock(p->verify_mu);
    p->all_settled = true;
  }
  p->verify_cv.notify_all();
}

// ---- data messages (puller side) ----
void PeerTransport::Impl::OnData(ConnId conn, std::span<const std::byte> header, size_t length,
                                 std::byte** dest, std::vector<DataPiece>* pieces,
                                 uint64_t* cookie) {
  uint32_t magic = 0;
  if (header.size() >= sizeof(magic)) std::memcpy(&magic, header.data(), sizeof(magic));
  if (magic == wire::kMultiDataMagic) {  // both magics are compared in host byte order
    OnMultiData(header, length, dest, pieces, cookie);
    return;
  }
  // The AM header is a DataHeader, followed by the 64-byte block header for a split block.
  if (header.size() != wire::kDataHeaderSize &&
      header.size() != wire::kDataHeaderSize + kBlockHeaderSize)
    return;
  const bool split = header.size() != wire::kDataHeaderSize;
  auto h = wire::DecodeDataHeader(header.first(wire::kDataHeaderSize));
  if (!h.ok()) return;
  auto it = pulls.find(h->request_id);
  if (it == pulls.end()) return;
  auto& p = *it->second;
  if (h->index >= p.targets.size() || p.settled[h->index] || !p.failure.ok()) return;
  p.last_data = Clock::now();
  if (p.first_data == Clock::time_point{}) p.first_data = p.last_data;
  if (h->status != StatusCode::kOk) {
    Settle(p, h->index, Status(h->status, "peer " + p.peer + " cannot serve block " +
                                             p.targets[h->index].key.ToHex()));
    MaybeFinish(it->second);
    return;
  }
  const PullTarget& t = p.targets[h->index];
  // Bytes the block takes at dest: a split block's header goes to header_dest, or ahead of
  // the payload for a contiguous target.
  size_t at_dest = length + (split && t.header_dest == nullptr ? kBlockHeaderSize : 0);
  if (t.dest == nullptr) at_dest = length;  // allocated on arrival: capacity bounds the payload
  if (h->length != length || at_dest > t.capacity || length == 0 ||
      (!split && t.header_dest != nullptr)) {
    Settle(p, h->index,
           Status::Corruption("peer " + p.peer + " sent " + std::to_string(length) +
                              " bytes for a block of " + std::to_string(t.capacity) +
                              " reserved bytes" + (split ? "" : " (not split)")));
    MaybeFinish(it->second);
    return;
  }
  if (split) {
    const std::byte* block_header = header.data() + wire::kDataHeaderSize;
    if (t.dest == nullptr) {
      // Allocated on arrival: the header says how long the payload is.
      PullTarget& mt = p.targets[h->index];
      auto bh = DecodeBlockHeader(std::span<const std::byte>(block_header, kBlockHeaderSize));
      Status bad;
      if (!bh.ok())
        bad = bh.status().WithContext("pulled block " + mt.key.ToHex());
      else if (bh->key != mt.key || bh->payload_length != length)
        bad = Status::Corruption("peer " + p.peer + " sent a block header that does not match");
      std::byte* where = bad.ok() && mt.header_dest != nullptr && mt.allocate
                             ? mt.allocate(*bh)
                             : nullptr;
      if (bad.ok() && where == nullptr)
        bad = Status::ResourceExhausted("no local space for pulled block " + mt.key.ToHex());
      if (bad.ok() && !InsideRegions(where, length))
        bad = Status::Internal("allocated destination is outside the registered pool");
      if (!bad.ok()) {
        Settle(p, h->index, std::move(bad));
        MaybeFinish(it->second);
        return;
      }
      mt.dest = where;
      std::memcpy(mt.header_dest, block_header, kBlockHeaderSize);
      *dest = where;
    } else if (t.header_dest != nullptr) {
      std::memcpy(t.header_dest, block_header, kBlockHeaderSize);
      *dest = t.dest;
    } else {
      std::memcpy(t.dest, block_header, kBlockHeaderSize);
      *dest = t.dest + kBlockHeaderSize;
    }
  } else {
    *dest = t.dest;
  }
  *cookie = (h->request_id << kIndexBits) | h->index;
  ++p.receiving;
  ++p.in_ucx[h->index];
}

void PeerTransport::Impl::OnMultiData(std::span<const std::byte> header, size_t length,
                                      std::byte** dest, std::vector<DataPiece>* pieces,
                                      uint64_t* cookie) {
  auto h = wire::DecodeMultiDataHeader(header);
  if (!h.ok()) return;  // refused; its blocks time out like those of a bad single header
  auto it = pulls.find(h->request_id);
  if (it == pulls.end()) return;
  auto& p = *it->second;
  if (!p.failure.ok()) return;
  p.last_data = Clock::now();
  if (p.first_data == Clock::time_point{}) p.first_data = p.last_data;
  // The message as a whole: its length must be what its entries add up to, and no more than
  // this pull asked for (the discard buffer's size); else every block it names fails.
  uint64_t sum = 0;
  for (size_t e = 0; e < h->count; ++e) sum += h->LengthAt(e);
  if (sum != length || h->length != length || length > p.max_message_bytes ||
      length > discard.size()) {
    for (size_t e = 0; e < h->count; ++e) {
      const uint32_t index = h->IndexAt(e);
      if (index < p.targets.size())
        Settle(p, index,
               Status::Corruption("peer " + p.peer + " sent a multi-block message of " +
                                  std::to_string(length) + " bytes that disagrees with its " +
                                  "header or exceeds " + std::to_string(p.max_message_bytes)));
    }
    MaybeFinish(it->second);
    return;
  }
  // Each block alone: one that cannot be placed fails by itself, its bytes dropped.
  std::vector<uint32_t> landing;
  landing.reserve(h->count);
  pieces->reserve(h->count);
  for (size_t e = 0; e < h->count; ++e) {
    const uint32_t index = h->IndexAt(e);
    const size_t len = h->LengthAt(e);
    std::byte* where = nullptr;
    if (index < p.targets.size() && !p.settled[index] &&
        std::find(landing.begin(), landing.end(), index) == landing.end()) {
      PullTarget& t = p.targets[index];
      auto bh = DecodeBlockHeader(std::span<const std::byte>(h->BlockHeaderAt(e)));
      const size_t at_dest = len + (t.header_dest == nullptr ? kBlockHeaderSize : 0);
      Status bad;
      if (!bh.ok())
        bad = bh.status().WithContext("pulled block " + t.key.ToHex());
      else if (bh->key != t.key || bh->payload_length != len || len == 0)
        bad = Status::Corruption("peer " + p.peer + " sent a block header that does not match");
      else if ((t.dest == nullptr ? len : at_dest) > t.capacity)
        bad = Status::Corruption("peer " + p.peer + " sent " + std::to_string(len) +
                                 " bytes for a block of " + std::to_string(t.capacity) +
                                 " reserved bytes");
      if (bad.ok() && t.dest == nullptr) {
        // Allocated on arrival: the header says how long the payload is.
        std::byte* at = t.header_dest != nullptr && t.allocate ? t.allocate(*bh) : nullptr;
        if (at == nullptr)
          bad = Status::ResourceExhausted("no local space for pulled block " + t.key.ToHex());
        else if (!InsideRegions(at, len))
          bad = Status::Internal("allocated destination is outside the registered pool");
        else
          t.dest = at;
      }
      if (bad.ok()) {
        if (t.header_dest != nullptr) {
          std::memcpy(t.header_dest, h->BlockHeaderAt(e).data(), kBlockHeaderSize);
          where = t.dest;
        } else {
          std::memcpy(t.dest, h->BlockHeaderAt(e).data(), kBlockHeaderSize);
          where = t.dest + kBlockHeaderSize;
        }
        landing.push_back(index);
      } else {
        Settle(p, index, std::move(bad));
      }
    }
    pieces->push_back({where != nullptr ? where : discard.data(), len});
  }
  if (landing.empty()) {
    pieces->clear();  // nothing to land: refuse it (the holder's send fails, its pins go)
    MaybeFinish(it->second);
    return;
  }
  // Every block placed, one right after the other inside one registered unit (the node's
  // allocator hands out adjacent chunks of a slab to consecutive reservations when it can):
  // receive the message as one contiguous buffer. With a contiguous send as well, UCX 1.13's
  // rendezvous then gets it zero-copy (cma on one host) in one operation; an iov receive
  // always goes as fragments. Each block is still verified alone when it has landed.
  prof.landed_multi.fetch_add(1, std::memory_order_relaxed);
  if (landing.size() == h->count && Adjacent(*pieces) &&
      InsideOneUnit((*pieces)[0].data, length)) {
    *dest = (*pieces)[0].data;
    pieces->clear();
    prof.landed_contiguous.fetch_add(1, std::memory_order_relaxed);
  }
  *cookie = (h->request_id << kIndexBits) | kMultiBit | p.messages.size();
  for (uint32_t index : landing) ++p.in_ucx[index];
  p.messages.push_back(std::move(landing));
  ++p.receiving;
}

template <typename Fn>
void PeerTransport::Impl::ForEachIndex(const PullOp::State& p, uint64_t cookie, Fn&& fn) {
  const size_t index = cookie & ((uint64_t{1} << kIndexBits) - 1) & ~kMultiBit;
  if (cookie & kMultiBit) {
    if (index < p.messages.size())
      for (uint32_t i : p.messages[index]) fn(i);
  } else {
    fn(index);
  }
}

void PeerTransport::Impl::OnDataDone(ConnId conn, uint64_t cookie, const Status& st) {
  const uint64_t rid = cookie >> kIndexBits;
  auto it = pulls.find(rid);
  std::shared_ptr<PullOp::State> p;
  if (it != pulls.end()) {
    p = it->second;
  } else if (auto h = held_pulls.find(rid); h != held_pulls.end()) {
    p = h->second;
  } else {
    return;
  }
  if (!st.ok()) {
    // The block fails now; its place stays UCX's until the grace has passed.
    prof.failed_receives.fetch_add(1, std::memory_order_relaxed);
    quarantined_receives.push_back({Clock::now() + kFailedReceiveGrace, p, cookie});
    if (it == pulls.end()) return;
    ForEachIndex(*p, cookie, [&](size_t i) { Landed(*p, i, st); });
    MaybeFinish(p);
    return;
  }
  if (it == pulls.end()) {
    HeldReceiveDone(p, cookie);
    return;
  }
  p->last_data = Clock::now();
  if (p->receiving > 0) --p->receiving;
  ForEachIndex(*p, cookie, [&](size_t i) {
    if (i < p->in_ucx.size() && p->in_ucx[i] > 0) --p->in_ucx[i];
    Landed(*p, i, st);
  });
  MaybeFinish(p);
}

void PeerTransport::Impl::ReceiveReported(const std::shared_ptr<PullOp::State>& p,
                                          uint64_t cookie) {
  const uint64_t rid = cookie >> kIndexBits;
  if (auto it = pulls.find(rid); it != pulls.end() && it->second == p) {
    // Still in flight: the block was settled when UCX failed the receive.
    if (p->receiving > 0) --p->receiving;
    ForEachIndex(*p, cookie, [&](size_t i) {
      if (i < p->in_ucx.size() && p->in_ucx[i] > 0) --p->in_ucx[i];
    });
    MaybeFinish(p);
    return;
  }
  if (auto h = held_pulls.find(rid); h != held_pulls.end() && h->second == p)
    HeldReceiveDone(p, cookie);
}

void PeerTransport::Impl::HeldReceiveDone(const std::shared_ptr<PullOp::State>& held,
                                          uint64_t cookie) {
  const std::shared_ptr<PullOp::State> p = held;  // the erase below destroys `held`
  if (p->receiving > 0) --p->receiving;
  ForEachIndex(*p, cookie, [&](size_t i) {
    if (i >= p->in_ucx.size() || p->in_ucx[i] == 0) return;
    --p->in_ucx[i];
    MaybeRelease(*p, i);
  });
  if (p->receiving == 0) held_pulls.erase(p->request_id);
}

void PeerTransport::Impl::MaybeRelease(PullOp::State& p, size_t index) {
  if (p.in_ucx[index] != 0 || !p.on_release[index]) return;
  auto release = std::move(p.on_release[index]);
  p.on_release[index] = nullptr;
  release();
  prof.held_released.fetch_add(1, std::memory_order_relaxed);
}

void PeerTransport::Impl::Landed(PullOp::State& state, size_t index, const Status& st) {
  PullOp::State* p = &state;
  if (!st.ok()) {
    // A receive cancelled because the pull failed reports why the pull failed.
    Settle(*p, index, p->failure.ok() ? st : p->failure);
  } else if (!p->settled[index] && options.verify_on_landing) {
    // Landed, by this thread for cma's get and tcp: verify now, while the bytes are in cache.
    const auto t0 = Clock::now();
    Settle(*p, index, Verify(p->targets[index], p->ns, &p->landed_bytes));
    p->landed_verify_s += std::chrono::duration<double>(Clock::now() - t0).count();
  } else if (!p->settled[index]) {
    // Landed: verified by the thread in PullOp::Wait (it overrides this OK when a check fails).
    Settle(*p, index, Status::OK());
    {
      std::lock_guard<std::mutex> lock(p->verify_mu);
      p->to_verify.push_back(static_cast<uint32_t>(index));
    }
    p->verify_cv.notify_all();
  }
}

Status PeerTransport::Impl::Verify(const PullTarget& t, const NamespaceId& ns, size_t* bytes) {
  const bool split = t.header_dest != nullptr;
  auto h = split ? DecodeBlockHeader(std::span<const std::byte>(t.header_dest, kBlockHeaderSize))
                 : DecodeBlockHeader(std::span<const std::byte>(t.dest, t.capacity));
  if (!h.ok()) return h.status().WithContext("pulled block " + t.key.ToHex());
  if (h->key != t.key) return Status::Corruption("pulled block has another key");
  if (ns != NamespaceId{} && h->ns != ns)
    return Status::Corruption("pulled block has another namespace");
  const std::byte* payload = split ? t.dest : t.dest + kBlockHeaderSize;
  if (h->payload_length + (split ? 0 : kBlockHeaderSize) > t.capacity)
    return Status::Corruption("pulled block is longer than the bytes received");
  STRATA_RETURN_IF_ERROR(
      VerifyPayload(*h, std::span<const std::byte>(payload, h->payload_length)));
  *bytes += kBlockHeaderSize + h->payload_length;
  return Status::OK();
}

// ---- mapped pulls (puller side) ----

void PeerTransport::Impl::NoteMappedFallback(const std::string& peer, const std::string& why) {
  prof.mapped_fallbacks.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(fallback_mu);
  if (!fallback_logged.insert(peer).second) return;
  std::fprintf(stderr,
               "strata: cluster: pulls from %s do not map its pool (%s): its blocks travel as "
               "bytes (cma/UCX)\n",
               peer.c_str(), why.c_str());
}

void PeerTransport::Impl::SetUpMapping(Session& s, const std::optional<wire::SameHost>& holder) {
  if (!options.mapped_pulls) return;  // off here: nothing to fall back from
  if (!holder) {
    NoteMappedFallback(s.peer, "it offers none: mapped pulls off there, or an older version");
    return;
  }
  if (std::string why = SameHostMismatch(*holder); !why.empty()) {
    NoteMappedFallback(s.peer, why);
    return;
  }
  auto mapping = PeerPoolMapping::Open(holder->pid);
  if (!mapping.ok()) {
    NoteMappedFallback(s.peer, mapping.status().ToString());
    return;
  }
  s.mapping = std::move(mapping).value();
  prof.mapped_sessions.fetch_add(1, std::memory_order_relaxed);
}

void PeerTransport::Impl::OnMappedBlocks(const wire::MappedBlocks& m) {
  auto it = pulls.find(m.request_id);
  if (it == pulls.end()) return;  // given up: the holder's pins expire at their deadline
  auto& p = *it->second;
  if (p.mapping == nullptr || !p.failure.ok()) return;
  p.last_data = Clock::now();
  if (p.first_data == Clock::time_point{}) p.first_data = p.last_data;
  std::vector<wire::MappedBlock> accepted;
  accepted.reserve(m.blocks.size());
  for (const wire::MappedBlock& b : m.blocks) {
    if (b.index >= p.targets.size() || p.settled[b.index]) continue;
    // Settled OK for now: the thread in PullOp::Wait copies and verifies it, and its verdict
    // replaces this one.
    Settle(p, b.index, Status::OK());
    accepted.push_back(b);
  }
  if (!accepted.empty()) {
    {
      std::lock_guard<std::mutex> lock(p.verify_mu);
      p.to_copy.insert(p.to_copy.end(), accepted.begin(), accepted.end());
    }
    p.verify_cv.notify_all();
  }
  MaybeFinish(it->second);
}

Status PeerTransport::Impl::CopyMapped(PullOp::State& s, const wire::MappedBlock& b,
                                       size_t* bytes) {
  PullTarget& t = s.targets[b.index];
  auto h = DecodeBlockHeader(std::span<const std::byte>(b.header));
  if (!h.ok()) return h.status().WithContext("mapped block " + t.key.ToHex());
  if (h->key != t.key) return Status::Corruption("mapped block has another key");
  if (s.ns != NamespaceId{} && h->ns != s.ns)
    return Status::Corruption("mapped block has another namespace");
  if (h->payload_length != b.length || b.length == 0)
    return Status::Corruption("mapped block's length disagrees with its header");
  auto where = s.mapping->Locate(b);
  if (!where.ok()) return where.status().WithContext("mapping peer " + s.peer + "'s pool");
  std::byte* dest = nullptr;
  if (t.dest == nullptr) {
    // Placed now, on this thread (never the progress thread): the node reserves host-tier room.
    if (t.header_dest == nullptr || !t.allocate || b.length > t.capacity)
      return Status::Corruption("mapped block of " + std::to_string(b.length) +
                                " bytes does not fit its target");
    dest = t.allocate(*h);
    if (dest == nullptr)
      return Status::ResourceExhausted("no local space for pulled block " + t.key.ToHex());
    t.dest = dest;
  } else if (t.header_dest != nullptr) {
    if (b.length > t.capacity) return Status::Corruption("mapped block longer than its target");
    dest = t.dest;
  } else {
    if (b.length + kBlockHeaderSize > t.capacity)
      return Status::Corruption("mapped block longer than its target");
    std::memcpy(t.dest, b.header.data(), kBlockHeaderSize);
    dest = t.dest + kBlockHeaderSize;
  }
  if (t.header_dest != nullptr) std::memcpy(t.header_dest, b.header.data(), kBlockHeaderSize);
  // One pass: copy and XXH3-64 (non-temporal stores), then the sum against the header's.
  if (CopyWithChecksum(dest, where->payload, b.length) != h->payload_checksum)
    return Status::Corruption("mapped block " + t.key.ToHex() +
                              " does not match its checksum (its place in the holder's pool was "
                              "reused)");
  *bytes += kBlockHeaderSize + b.length;
  return Status::OK();
}

// ---- PullOp ----

PullOp::~PullOp() {
  if (state_ && state_->posted) (void)Wait();
}

Status PullOp::Post() {
  if (state_->posted) return Status::InvalidArgument("PullOp: already posted");
  state_->posted = true;
  auto st = state_;
  auto* impl = st->impl;
  impl->engine->Post([impl, st] {
    auto it = impl->sessions.find(st->peer);
    st->deadline = Clock::now() + impl->options.request_timeout;
    if (it == impl->sessions.end() || !it->second.ready || it->second.PullConn() != st->conn) {
      st->failure = Status::Unavailable("session with peer " + st->peer + " was lost");
      impl->MaybeFinish(st);
      return;
    }
    impl->pulls[st->request_id] = st;
    st->posted_at = Clock::now();
    st->last_data = st->posted_at;
    impl->prof.pull_requests.fetch_add(1, std::memory_order_relaxed);
    impl->prof.pull_blocks.fetch_add(st->targets.size(), std::memory_order_relaxed);
    PeerTransport::Impl::RaiseTo(impl->prof.max_pulls_in_flight, impl->pulls.size());
    if (st->targets.empty()) {
      impl->MaybeFinish(st);
      return;
    }
    impl->engine->SendControl(st->conn, std::move(st->frame), [impl, st](const Status& s) {
      if (!s.ok() && st->failure.ok()) {
        st->failure = s;
        impl->MaybeFinish(st);
      }
    });
  });
  return Status::OK();
}

PullResult PullOp::Wait() {
  if (!state_->posted) {
    PullResult r;
    r.blocks.assign(state_->targets.size(), Status::Aborted("PullOp was never posted"));
    return r;
  }
  if (!state_->future.valid()) return PullResult{};
  // Verify the blocks as they land (the progress thread only receives), until every block is
  // settled and every landed one verified.
  State& s = *state_;
  std::vector<std::pair<uint32_t, Status>> failed;
  size_t bytes = 0;
  double verify_s = 0;
  bool mapped = false;
  PeerTransport::Impl::ProfileCounters& prof = s.impl->prof;
  for (;;) {
    std::vector<uint32_t> batch;
    std::vector<wire::MappedBlock> copies;
    bool last = false;
    {
      std::unique_lock<std::mutex> lock(s.verify_mu);
      s.verify_cv.wait(lock, [&] {
        return !s.to_verify.empty() || !s.to_copy.empty() || s.all_settled;
      });
      batch.swap(s.to_verify);
      copies.swap(s.to_copy);
      last = s.all_settled;
    }
    const auto t0 = Clock::now();
    for (uint32_t i : batch) {
      Status st = PeerTransport::Impl::Verify(s.targets[i], s.ns, &bytes);
      if (!st.ok()) failed.emplace_back(i, std::move(st));
    }
    const auto t1 = Clock::now();
    verify_s += std::chrono::duration<double>(t1 - t0).count();
    if (!copies.empty()) {
      mapped = true;
      if (s.impl->options.mapped_copy_delay_for_test.count() > 0)
        std::this_thread::sleep_for(s.impl->options.mapped_copy_delay_for_test);
      for (const wire::MappedBlock& b : copies) {
        const size_t before = bytes;
        Status st = PeerTransport::Impl::CopyMapped(s, b, &bytes);
        if (st.ok()) {
          prof.mapped_blocks.fetch_add(1, std::memory_order_relaxed);
          prof.mapped_bytes.fetch_add(bytes - before - kBlockHeaderSize,
                                      std::memory_order_relaxed);
        } else {
          prof.mapped_failures.fetch_add(1, std::memory_order_relaxed);
          failed.emplace_back(b.index, std::move(st));
        }
      }
      prof.mapped_copy_ns.fetch_add(PeerTransport::Impl::NsSince(t1), std::memory_order_relaxed);
      if (s.mapping->TakeOffNotice())
        s.impl->NoteMappedFallback(s.peer, "its slabs could not be mapped " +
                                               std::to_string(PeerPoolMapping::kMaxFailures) +
                                               " times in a row");
    }
    if (last && batch.empty() && copies.empty()) break;
  }
  if (mapped) {
    // Copied (or refused): the holder may unpin them now rather than at their deadline.
    PeerTransport::Impl* impl = s.impl;
    impl->engine->Post([impl, conn = s.conn, rid = s.request_id, token = s.token] {
      impl->SendMessage(conn, wire::PullRelease{rid, token});
    });
  }
  PullResult r = s.future.get();
  for (auto& [i, st] : failed) r.blocks[i] = std::move(st);
  // The promise was set after the progress thread's last write to landed_* (MaybeFinish).
  r.bytes = bytes + s.landed_bytes;
  r.verify_s = verify_s + s.landed_verify_s;
  return r;
}

void PullOp::ReleaseHeld(size_t index, std::function<void()> release) {
  auto st = state_;
  st->impl->engine->Post([st, index, release = std::move(release)]() mutable {
    if (index >= st->on_release.size()) return;
    st->on_release[index] = std::move(release);
    st->impl->MaybeRelease(*st, index);
  });
}

Result<std::unique_ptr<PullOp>> PeerTransport::PreparePull(const std::string& peer,
                                                           const NamespaceId& ns,
                                                           std::vector<PullTarget> targets) {
  if (targets.size() > wire::kMaxKeysPerMessage)
    return Status::InvalidArgument("PreparePull: too many blocks in one pull");
  for (const PullTarget& t : targets) {
    if (t.dest == nullptr && t.header_dest != nullptr && t.allocate && t.capacity > 0)
      continue;  // allocated on arrival
    if (t.dest == nullptr || t.capacity < (t.header_dest != nullptr ? 1 : kBlockHeaderSize))
      return Status::InvalidArgument("PreparePull: a target has no room for a block");
    if (!impl_->InsideRegions(t.dest, t.capacity))
      return Status::InvalidArgument("PreparePull: a destination is outside the registered pool");
  }
  auto st = std::make_shared<PullOp::State>();
  st->impl = impl_.get();
  st->peer = peer;
  st->ns = ns;
  st->request_id = impl_->next_request.fetch_add(1);
  st->max_message_bytes = impl_->options.pull_coalesce_bytes;
  wire::PullRequest req;
  req.request_id = st->request_id;
  req.namespace_id = ns;
  req.max_message_bytes = st->max_message_bytes;
  for (const PullTarget& t : targets) {
    req.keys.push_back(t.key);
    // On the wire a capacity counts the whole block (header + payload).
    req.capacities.push_back(t.capacity + (t.header_dest != nullptr ? kBlockHeaderSize : 0));
  }
  // Resolve the session now, so that Post() only issues: from the ready sessions, else through
  // the progress thread (for its answer on why there is none).
  using ConnAndToken = std::pair<ConnId, std::vector<std::byte>>;
  Result<ConnAndToken> conn = Status::Unavailable("");
  std::shared_ptr<PeerPoolMapping> mapping;
  {
    std::lock_guard<std::mutex> lock(impl_->ready_mu);
    if (auto it = impl_->ready_sessions.find(peer); it != impl_->ready_sessions.end()) {
      conn = ConnAndToken{it->second.pull_conn, it->second.token};
      mapping = it->second.mapping;
    }
  }
  if (!conn.ok()) conn = impl_->RunSync<Result<ConnAndToken>>(
      [impl = impl_.get(), peer]() -> Result<ConnAndToken> {
        auto it = impl->sessions.find(peer);
        if (it == impl->sessions.end() || !it->second.ready)
          return Status::Unavailable("no session with peer " + peer + " (Connect first)");
        return ConnAndToken{it->second.PullConn(), it->second.token};
      });
  if (!conn.ok()) return conn.status();
  st->conn = conn->first;
  req.session = conn->second;
  if (mapping != nullptr && !mapping->off()) {
    st->mapping = std::move(mapping);
    st->token = req.session;
    req.mapped = true;
  }
  STRATA_ASSIGN_OR_RETURN(st->frame, wire::EncodeFrame(req));
  st->status.assign(targets.size(), Status::OK());
  st->settled.assign(targets.size(), 0);
  st->in_ucx.assign(targets.size(), 0);
  st->on_release.resize(targets.size());
  st->unsettled = targets.size();
  st->targets = std::move(targets);
  return std::unique_ptr<PullOp>(new PullOp(std::move(st)));
}

Result<PullResult> PeerTransport::Pull(const std::string& peer, const NamespaceId& ns,
                                       std::vector<PullTarget> targets) {
  STRATA_ASSIGN_OR_RETURN(auto op, PreparePull(peer, ns, std::move(targets)));
  STRATA_RETURN_IF_ERROR(op->Post());
  return op->Wait();
}

}  // namespace strata::transport
