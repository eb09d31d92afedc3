// PeerTransport request/response calls (peer_transport_impl.h).
#include <algorithm>
#include <cstring>
#include <limits>

#include "strata/block_format.h"
#include "transport/peer_transport_impl.h"

namespace strata::transport {

Result<wire::Message> PeerTransport::Impl::Call(const std::string& peer, wire::Message m, uint64_t id) {
  auto promise = std::make_shared<std::promise<Result<wire::Message>>>();
  auto future = promise->get_future();
  engine->Post([this, peer, id, promise, m = std::move(m)]() mutable {
    auto it = sessions.find(peer);
    if (it == sessions.end() || !it->second.ready) {
      promise->set_value(Status::Unavailable("no session with peer " + peer));
      return;
    }
    std::visit(
        [&](auto& x) {
          if constexpr (requires { x.session; }) x.session = it->second.token;
        },
        m);
    auto frame = wire::EncodeFrame(m);
    if (!frame.ok()) {
      promise->set_value(frame.status());
      return;
    }
    rpcs[id] = Rpc{it->second.conn, Clock::now() + options.request_timeout, promise};
    engine->SendControl(it->second.conn, std::move(*frame));
  });
  return future.get();
}

Result<wire::LookupResponse> PeerTransport::Lookup(const std::string& peer,
                                                   std::vector<BlockKey> keys) {
  const uint64_t id = impl_->next_request.fetch_add(1);
  STRATA_ASSIGN_OR_RETURN(auto m, impl_->Call(peer, wire::LookupRequest{id, std::move(keys), {}}, id));
  auto* resp = std::get_if<wire::LookupResponse>(&m);
  if (resp == nullptr) return Status::Corruption("peer answered a lookup with another message");
  return std::move(*resp);
}

Status PeerTransport::Announce(const std::string& peer, wire::Announce announce) {
  const uint64_t id = impl_->next_request.fetch_add(1);
  announce.request_id = id;
  auto m = impl_->Call(peer, std::move(announce), id);
  if (!m.ok()) return m.status();
  if (!std::holds_alternative<wire::AnnounceAck>(*m))
    return Status::Corruption("peer answered an announce with another message");
  return Status::OK();
}

Status PeerTransport::SendRawForTest(const std::string& peer, std::vector<std::byte> bytes,
                                     std::chrono::milliseconds wait) {
  auto waiter = std::make_shared<std::promise<Status>>();
  auto future = waiter->get_future();
  impl_->engine->Post([impl = impl_.get(), peer, waiter, bytes = std::move(bytes)]() mutable {
    auto it = impl->sessions.find(peer);
    if (it == impl->sessions.end() || !it->second.ready) {
      waiter->set_value(Status::Unavailable("no session with peer " + peer));
      return;
    }
    it->second.raw_waiters.push_back(waiter);
    impl->engine->SendControl(it->second.conn, std::move(bytes));
  });
  if (future.wait_for(wait) == std::future_status::ready) return future.get();
  impl_->engine->Post([impl = impl_.get(), peer, waiter] {
    auto it = impl->sessions.find(peer);
    if (it == impl->sessions.end()) return;
    auto& w = it->second.raw_waiters;
    for (auto i = w.begin(); i != w.end(); ++i)
      if (*i == waiter) {
        w.erase(i);
        waiter->set_value(Status::OK());
        return;
      }
  });
  return future.get();
}

Status PeerTransport::SendRawUnauthenticatedForTest(std::span<const std::byte> address,
                                                    std::vector<std::byte> bytes,
                                                    std::chrono::milliseconds wait) {
  // A session that skips the handshake: ready at once, so raw sends go out on it.
  static std::atomic<int> counter{0};
  const std::string key = "raw-unauthenticated-" + std::to_string(counter++);
  std::vector<std::byte> addr(address.begin(), address.end());
  Status st = impl_->RunSync<Status>([impl = impl_.get(), key, addr]() -> Status {
    auto conn = impl->engine->Connect(addr);
    if (!conn.ok()) return conn.status();
    Impl::Session s;
    s.peer = key;
    s.conn = *conn;
    s.address = addr;
    s.ready = true;
    impl->client_conns[*conn] = key;
    impl->sessions[key] = std::move(s);
    return Status::OK();
  });
  STRATA_RETURN_IF_ERROR(st);
  Status got = SendRawForTest(key, std::move(bytes), wait);
  Disconnect(key);
  return got;
}

}  // namespace strata::transport
