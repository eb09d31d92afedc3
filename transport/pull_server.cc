// PeerTransport serving pulls from the BlockSource (peer_transport_impl.h).
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
  for (uint32_t i = 0; i < req.keys.size(); ++i) {
    if (options.block_source == nullptr) {
      SendBlockStatus(conn, req.request_id, i, StatusCode::kNotFound);
      continue;
    }
    auto pinned = options.block_source->Pin(req.keys[i]);
    if (!pinned.ok()) {
      SendBlockStatus(conn, req.request_id, i, pinned.status().code());
      continue;
    }
    // Serve only the namespace asked for (a tenant's salt is part of it) and only what fits.
    const bool split = pinned->header != nullptr;
    auto h = split
                 ? DecodeBlockHeader(std::span<const std::byte>(pinned->header, kBlockHeaderSize))
                 : DecodeBlockHeader(std::span<const std::byte>(pinned->data, pinned->size));
    const size_t block_bytes = pinned->size + (split ? kBlockHeaderSize : 0);
    StatusCode refuse = StatusCode::kOk;
    if (!h.ok() || h->key != req.keys[i] ||
        (split && h->payload_length != pinned->size))
      refuse = StatusCode::kCorruption;
    else if (req.namespace_id != NamespaceId{} && h->ns != req.namespace_id)
      refuse = StatusCode::kNotFound;  // a zero namespace asks for the one the key names
    else if (req.namespace_id == NamespaceId{} && !options.block_source->ServesUnnamed(h->ns))
      refuse = StatusCode::kPermissionDenied;  // a private tenant's block: name its namespace
    else if (block_bytes > req.capacities[i])
      refuse = StatusCode::kResourceExhausted;
    if (refuse != StatusCode::kOk) {
      options.block_source->Unpin(pinned->pin);
      SendBlockStatus(conn, req.request_id, i, refuse);
      continue;
    }
    // Split blocks: the block header rides in the AM header after the DataHeader; the payload
    // is sent zero-copy from the pool.
    std::array<std::byte, wire::kDataHeaderSize + kBlockHeaderSize> hdr;
    wire::EncodeDataHeader(wire::DataHeader{StatusCode::kOk, req.request_id, i, pinned->size},
                           std::span<std::byte, wire::kDataHeaderSize>(hdr.data(),
                                                                       wire::kDataHeaderSize));
    if (split)
      std::memcpy(hdr.data() + wire::kDataHeaderSize, pinned->header, kBlockHeaderSize);
    auto sp = std::make_shared<ServedPin>();
    sp->pin = pinned->pin;
    sp->deadline = Clock::now() + 2 * options.request_timeout;
    served_pins.push_back(sp);
    engine->SendData(conn,
                     std::span<const std::byte>(hdr.data(), split ? hdr.size()
                                                                  : wire::kDataHeaderSize),
                     pinned->data, pinned->size,
                     [this, sp](const Status&) { ReleasePin(*sp); });
  }
}

}  // namespace strata::transport
