// PeerTransport serving pulls from the BlockSource (peer_transport_impl.h).
//
// A block the source holds at hand (Pin) is answered at once. One it must first bring into the
// pool (PinLater: the node promotes it from its disk tier on another thread) is answered when it
// is ready: the ready callback posts the pinned block back to the progress thread, which serves
// other requests meanwhile. The puller takes a pull's blocks in any order (each data message
// names its index). A block that cannot be made ready is answered with the source's error
// (NotFound: the puller asks another holder).
#include <algorithm>
#include <cstring>
#include <limits>

#include "strata/block_format.h"
#include "transport/peer_transport_impl.h"

namespace strata::transport {

void PeerTransport::Impl::SendBlockStatus(ConnId conn, uint64_t rid, uint32_t index, StatusCode code) {
  std::array<std::byte, wire::kDataHeaderSize> hdr;
  wire::EncodeDataHeader(wire::DataHeader{code, rid, index, 0}, hdr);
  engine->SendData(conn, hdr, nullptr, 0, {});
}

void PeerTransport::Impl::ServePull(ConnId conn, const wire::PullRequest& req) {
  const Clock::time_point arrived = Clock::now();
  uint64_t pin_ns = 0;
  // Multi-block messages, when the puller asked for them: blocks under kCoalesceBlockBelow whose
  // payload is at most half the message go together, as many as the AM header carries.
  const uint64_t message_bytes = req.max_message_bytes;
  const size_t max_entries =
      message_bytes == 0 || engine->max_am_header() < wire::MultiDataHeaderSize(2)
          ? 0
          : std::min<size_t>(65535, (engine->max_am_header() - wire::kMultiHeaderSize) /
                                        wire::kMultiEntrySize);
  Batch batch;
  batch.rid = req.request_id;
  // A mapped pull (a same-host puller that maps this node's pool): blocks at hand are answered
  // with where they lie, pinned until the puller's PullRelease or two request timeouts.
  const bool mapped = req.mapped && same_host_offer.has_value();
  wire::MappedBlocks answer;
  answer.request_id = req.request_id;
  MappedPins* held = nullptr;
  const auto flush = [&] {
    if (answer.blocks.empty()) return;
    SendMessage(conn, answer);
    answer.blocks.clear();
  };
  for (uint32_t i = 0; i < req.keys.size(); ++i) {
    if (options.block_source == nullptr) {
      SendBlockStatus(conn, req.request_id, i, StatusCode::kNotFound);
      continue;
    }
    const Clock::time_point pinning = Clock::now();
    auto pinned = options.block_source->Pin(req.keys[i]);
    pin_ns += NsSince(pinning);
    if (!pinned.ok() && pinned.status().IsNotFound()) {
      const uint64_t rid = req.request_id;
      const BlockKey key = req.keys[i];
      const NamespaceId ns = req.namespace_id;
      const uint64_t capacity = req.capacities[i];
      std::weak_ptr<DeferGate> gate = defer_gate;
      BlockSource* source = options.block_source;
      const bool later = source->PinLater(
          key, [gate, source, conn, rid, i, key, ns, capacity](Result<PinnedBlock> ready) {
            auto g = gate.lock();
            std::unique_lock<std::mutex> lock;
            if (g) lock = std::unique_lock<std::mutex>(g->mu);
            if (!g || g->impl == nullptr) {  // the transport is gone: nobody to send it
              if (ready.ok()) source->Unpin(ready->pin);
              return;
            }
            Impl* impl = g->impl;
            impl->engine->Post([impl, conn, rid, i, key, ns, capacity,
                                ready = std::move(ready)]() mutable {
              impl->ServeBlock(conn, rid, i, key, ns, capacity, std::move(ready));
            });
          });
      if (later) continue;
    }
    SharedPlace place;
    if (mapped && pinned.ok() && pinned->header != nullptr) {
      // Checked once: a refusal is answered here (BlockSource::ServesUnnamed counts each).
      if (RefuseUnserved(conn, req.request_id, i, req.keys[i], req.namespace_id, req.capacities[i],
                         *pinned))
        continue;
    }
    if (mapped && pinned.ok() && pinned->header != nullptr &&
        options.block_source->SharedPlaceOf(*pinned, &place)) {
      if (held == nullptr) {
        held = &mapped_pins[req.request_id];
        held->token = TokenKey(req.session);
        held->deadline = Clock::now() + 2 * options.request_timeout;
      }
      auto sp = std::make_shared<ServedPin>();
      sp->pin = pinned->pin;
      sp->deadline = held->deadline;
      sp->mapped = true;
      served_pins.push_back(sp);
      held->pins.push_back(std::move(sp));
      wire::MappedBlock b;
      b.index = i;
      b.slab = place.slab;
      b.generation = place.generation;
      b.fd = place.fd;
      b.offset = place.offset;
      b.length = pinned->size;
      std::memcpy(b.header.data(), pinned->header, kBlockHeaderSize);
      answer.blocks.push_back(b);
      prof.served_blocks.fetch_add(1, std::memory_order_relaxed);
      prof.served_mapped.fetch_add(1, std::memory_order_relaxed);
      if (answer.blocks.size() == wire::kMaxMappedPerMessage) flush();
      continue;
    }
    const size_t payload = !pinned.ok()                ? 0
                           : pinned->header != nullptr ? pinned->size
                           : pinned->size >= kBlockHeaderSize ? pinned->size - kBlockHeaderSize
                                                              : 0;
    if (max_entries == 0 || !pinned.ok() || payload == 0 || 2 * payload > message_bytes ||
        payload >= kCoalesceBlockBelow) {
      ServeBlock(conn, req.request_id, i, req.keys[i], req.namespace_id, req.capacities[i],
                 std::move(pinned));
      continue;
    }
    if (RefuseUnserved(conn, req.request_id, i, req.keys[i], req.namespace_id, req.capacities[i],
                       *pinned))
      continue;
    if (batch.bytes + payload > message_bytes || batch.pins.size() == max_entries)
      SendBatch(conn, batch);
    const std::byte* header = pinned->header != nullptr ? pinned->header : pinned->data;
    const std::byte* data = pinned->header != nullptr ? pinned->data
                                                      : pinned->data + kBlockHeaderSize;
    if (batch.header.empty()) batch.header.resize(wire::kMultiHeaderSize);
    const size_t at = batch.header.size();
    batch.header.resize(at + wire::kMultiEntrySize);
    wire::EncodeMultiEntry(
        i, static_cast<uint32_t>(payload), std::span<const std::byte, 64>(header, 64),
        std::span<std::byte, wire::kMultiEntrySize>(batch.header.data() + at,
                                                    wire::kMultiEntrySize));
    batch.pieces.push_back({const_cast<std::byte*>(data), payload});
    batch.pins.push_back(pinned->pin);
    batch.bytes += payload;
  }
  SendBatch(conn, batch);
  flush();
  prof.served_requests.fetch_add(1, std::memory_order_relaxed);
  prof.serve_pin_ns.fetch_add(pin_ns, std::memory_order_relaxed);
  prof.serve_request_ns.fetch_add(NsSince(arrived), std::memory_order_relaxed);
}

void PeerTransport::Impl::OnPullRelease(const wire::PullRelease& m) {
  auto it = mapped_pins.find(m.request_id);
  if (it == mapped_pins.end() || it->second.token != TokenKey(m.session)) return;
  for (const auto& sp : it->second.pins) {
    if (sp->released) continue;
    ReleasePin(*sp);
    prof.mapped_released.fetch_add(1, std::memory_order_relaxed);
  }
  mapped_pins.erase(it);
}

void PeerTransport::Impl::SendBatch(ConnId conn, Batch& batch) {
  if (batch.pins.empty()) return;
  const size_t n = batch.pins.size();
  wire::EncodeMultiDataHeader(batch.rid, batch.bytes, static_cast<uint16_t>(n), batch.header);
  std::vector<std::shared_ptr<ServedPin>> pins;
  pins.reserve(n);
  const auto deadline = Clock::now() + 2 * options.request_timeout;
  for (uint64_t pin : batch.pins) {
    auto sp = std::make_shared<ServedPin>();
    sp->pin = pin;
    sp->deadline = deadline;
    served_pins.push_back(sp);
    pins.push_back(std::move(sp));
  }
  prof.served_blocks.fetch_add(n, std::memory_order_relaxed);
  prof.served_messages.fetch_add(1, std::memory_order_relaxed);
  if (Adjacent(batch.pieces)) prof.served_contiguous.fetch_add(1, std::memory_order_relaxed);
  RaiseTo(prof.max_sends_in_flight, ++prof.sends_in_flight);
  engine->SendDataPieces(conn, batch.header, std::move(batch.pieces),
                         [this, pins = std::move(pins), queued = Clock::now()](const Status&) {
                           --prof.sends_in_flight;
                           prof.send_ns.fetch_add(NsSince(queued), std::memory_order_relaxed);
                           for (const auto& sp : pins) ReleasePin(*sp);
                         });
  batch.bytes = 0;
  batch.header.clear();
  batch.pieces = {};
  batch.pins.clear();
}

StatusCode PeerTransport::Impl::CheckServed(const BlockKey& key, const NamespaceId& ns,
                                            uint64_t capacity, const PinnedBlock& pinned) {
  // Serve only the namespace asked for (a tenant's salt is part of it) and only what fits.
  const bool split = pinned.header != nullptr;
  auto h = split ? DecodeBlockHeader(std::span<const std::byte>(pinned.header, kBlockHeaderSize))
                 : DecodeBlockHeader(std::span<const std::byte>(pinned.data, pinned.size));
  const size_t block_bytes = pinned.size + (split ? kBlockHeaderSize : 0);
  if (!h.ok() || h->key != key || (split && h->payload_length != pinned.size) ||
      (!split && h->payload_length + kBlockHeaderSize != pinned.size))
    return StatusCode::kCorruption;
  if (ns != NamespaceId{} && h->ns != ns)
    return StatusCode::kNotFound;  // a zero namespace asks for the one the key names
  if (ns == NamespaceId{} && !options.block_source->ServesUnnamed(h->ns))
    return StatusCode::kPermissionDenied;  // a private tenant's block: name its namespace
  if (block_bytes > capacity) return StatusCode::kResourceExhausted;
  return StatusCode::kOk;
}

bool PeerTransport::Impl::RefuseUnserved(ConnId conn, uint64_t rid, uint32_t index,
                                         const BlockKey& key, const NamespaceId& ns,
                                         uint64_t capacity, const PinnedBlock& pinned) {
  const StatusCode refuse = CheckServed(key, ns, capacity, pinned);
  if (refuse == StatusCode::kOk) return false;
  options.block_source->Unpin(pinned.pin);
  SendBlockStatus(conn, rid, index, refuse);
  return true;
}

void PeerTransport::Impl::ServeBlock(ConnId conn, uint64_t rid, uint32_t i, const BlockKey& key,
                                     const NamespaceId& ns, uint64_t capacity,
                                     Result<PinnedBlock> pinned) {
  if (!pinned.ok()) {
    SendBlockStatus(conn, rid, i, pinned.status().code());
    return;
  }
  const bool split = pinned->header != nullptr;
  if (RefuseUnserved(conn, rid, i, key, ns, capacity, *pinned)) return;
  // Split blocks: the block header rides in the AM header after the DataHeader; the payload
  // is sent zero-copy from the pool.
  std::array<std::byte, wire::kDataHeaderSize + kBlockHeaderSize> hdr;
  wire::EncodeDataHeader(
      wire::DataHeader{StatusCode::kOk, rid, i, pinned->size},
      std::span<std::byte, wire::kDataHeaderSize>(hdr.data(), wire::kDataHeaderSize));
  if (split) std::memcpy(hdr.data() + wire::kDataHeaderSize, pinned->header, kBlockHeaderSize);
  auto sp = std::make_shared<ServedPin>();
  sp->pin = pinned->pin;
  // From now: a deferred block's pin keeps served_pins ordered by deadline.
  sp->deadline = Clock::now() + 2 * options.request_timeout;
  served_pins.push_back(sp);
  prof.served_blocks.fetch_add(1, std::memory_order_relaxed);
  prof.served_messages.fetch_add(1, std::memory_order_relaxed);
  RaiseTo(prof.max_sends_in_flight, ++prof.sends_in_flight);
  engine->SendData(
      conn,
      std::span<const std::byte>(hdr.data(), split ? hdr.size() : wire::kDataHeaderSize),
      pinned->data, pinned->size, [this, sp, queued = Clock::now()](const Status&) {
        --prof.sends_in_flight;
        prof.send_ns.fetch_add(NsSince(queued), std::memory_order_relaxed);
        ReleasePin(*sp);
      });
}

}  // namespace strata::transport
