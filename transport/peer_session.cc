// PeerTransport sessions: handshake, admission, control requests (peer_transport_impl.h).
#include <algorithm>
#include <cstring>
#include <limits>

#include "strata/block_format.h"
#include "transport/peer_transport_impl.h"

namespace strata::transport {

void PeerTransport::Impl::OnClientControl(ConnId conn, std::span<const std::byte> bytes) {
  auto decoded = wire::DecodeFrame(bytes);
  if (!decoded.ok()) return;  // a server that speaks garbage: its requests will time out
  wire::Message& m = *decoded;
  // Responses are matched by request id (random start, so not guessable), not by connection.
  auto session_for = [&](uint64_t handshake_id) -> Session* {
    auto h = handshakes.find(handshake_id);
    if (h == handshakes.end()) return nullptr;
    auto it = sessions.find(h->second);
    return it == sessions.end() ? nullptr : &it->second;
  };
  if (auto* ack = std::get_if<wire::HelloAck>(&m)) {
    Session* s = session_for(ack->request_id);
    if (s == nullptr || s->ready) return;
    const bool ok = ack->node_id == s->peer &&
                    wire::VerifyHandshakeMac(options.cluster_secret, wire::MacRole::kServer,
                                             s->client_nonce, ack->nonce, options.node_id,
                                             ack->node_id, ack->server_mac);
    if (!ok) {
      FailConn(s->conn,
               Status::PermissionDenied("peer " + s->peer +
                                        " could not prove it knows the cluster secret"),
               true);
      return;
    }
    SendMessage(s->conn, wire::Auth{wire::HandshakeMac(options.cluster_secret,
                                                       wire::MacRole::kClient, s->client_nonce,
                                                       ack->nonce, options.node_id, s->peer),
                                    s->handshake_id, options.node_id});
  } else if (auto* ok = std::get_if<wire::AuthOk>(&m)) {
    Session* s = session_for(ok->request_id);
    if (s == nullptr || s->ready) return;
    s->ready = true;
    connect_backoff.erase(s->peer);
    s->token = ok->session;
    SetUpMapping(*s, ok->same_host);
    PublishReady(*s);
    handshakes.erase(s->handshake_id);
    for (auto& w : s->waiters) w->set_value(Status::OK());
    s->waiters.clear();
  } else if (auto* err = std::get_if<wire::ErrorMessage>(&m)) {
    if (Session* s = session_for(err->request_id); s != nullptr && !s->ready) {
      FailConn(s->conn, err->ToStatus().WithContext("peer refused the handshake"), true);
    } else if (auto r = rpcs.find(err->request_id); r != rpcs.end()) {
      if (r->second.probe) prof.probes_answered.fetch_add(1, std::memory_order_relaxed);
      r->second.promise->set_value(err->ToStatus());
      rpcs.erase(r);
    } else if (auto p = pulls.find(err->request_id); p != pulls.end()) {
      auto pull = p->second;
      if (pull->failure.ok()) pull->failure = err->ToStatus();
      MaybeFinish(pull);
    } else {
      // About no request of ours (e.g. a malformed message we sent): tell whoever waits.
      for (auto& [peer, s] : sessions) {
        for (auto& w : s.raw_waiters) w->set_value(err->ToStatus());
        s.raw_waiters.clear();
      }
    }
  } else if (auto* mb = std::get_if<wire::MappedBlocks>(&m)) {
    OnMappedBlocks(*mb);
  } else {
    uint64_t id = 0;
    if (auto* lr = std::get_if<wire::LookupResponse>(&m)) id = lr->request_id;
    if (auto* aa = std::get_if<wire::AnnounceAck>(&m)) id = aa->request_id;
    auto r = rpcs.find(id);
    if (id == 0 || r == rpcs.end()) return;
    if (r->second.probe) prof.probes_answered.fetch_add(1, std::memory_order_relaxed);
    r->second.promise->set_value(std::move(m));
    rpcs.erase(r);
  }
}

void PeerTransport::Impl::OnServerControl(ConnId conn, std::span<const std::byte> bytes) {
  auto decoded = wire::DecodeFrame(bytes);
  if (!decoded.ok()) {
    SendError(conn, 0, decoded.status());
    return;
  }
  wire::Message& m = *decoded;
  if (auto* hello = std::get_if<wire::Hello>(&m)) {
    if (hello->protocol_version != wire::kProtocolVersion) {
      SendError(conn, hello->request_id,
                Status::NotSupported("protocol version " +
                                     std::to_string(hello->protocol_version) +
                                     " is not supported (this node speaks " +
                                     std::to_string(wire::kProtocolVersion) + ")"));
      return;
    }
    PendingHandshake& h = pending_handshakes[hello->node_id];
    h.request_id = hello->request_id;
    h.client_nonce = hello->nonce;
    h.server_nonce = wire::RandomNonce();
    SendMessage(conn, wire::HelloAck{options.node_id, h.server_nonce,
                                     wire::HandshakeMac(options.cluster_secret,
                                                        wire::MacRole::kServer, h.client_nonce,
                                                        h.server_nonce, hello->node_id,
                                                        options.node_id),
                                     hello->request_id});
    return;
  }
  if (auto* auth = std::get_if<wire::Auth>(&m)) {
    auto h = pending_handshakes.find(auth->node_id);
    const bool ok =
        h != pending_handshakes.end() && h->second.request_id == auth->request_id &&
        wire::VerifyHandshakeMac(options.cluster_secret, wire::MacRole::kClient,
                                 h->second.client_nonce, h->second.server_nonce,
                                 auth->node_id, options.node_id, auth->client_mac);
    if (h != pending_handshakes.end()) pending_handshakes.erase(h);
    if (!ok) {
      SendError(conn, auth->request_id,
                Status::PermissionDenied("handshake failed: wrong cluster secret"));
      return;
    }
    // One live session per client: a new handshake revokes the previous token.
    auto token = wire::RandomNonce();
    token.resize(wire::kSessionSize);
    if (auto old = token_of_client.find(auth->node_id); old != token_of_client.end())
      admitted.erase(old->second);
    admitted[TokenKey(token)] = auth->node_id;
    token_of_client[auth->node_id] = TokenKey(token);
    SendMessage(conn, wire::AuthOk{auth->request_id, token, same_host_offer});
    return;
  }
  if (std::holds_alternative<wire::ErrorMessage>(m)) return;  // never answer an Error
  const std::vector<std::byte>* session = nullptr;
  uint64_t request_id = 0;
  if (auto* x = std::get_if<wire::LookupRequest>(&m)) session = &x->session, request_id = x->request_id;
  if (auto* x = std::get_if<wire::Announce>(&m)) session = &x->session, request_id = x->request_id;
  if (auto* x = std::get_if<wire::PullRequest>(&m)) session = &x->session, request_id = x->request_id;
  if (auto* x = std::get_if<wire::PullRelease>(&m)) session = &x->session, request_id = x->request_id;
  if (session == nullptr) {
    SendError(conn, 0,
              Status::InvalidArgument(std::string(wire::MessageTypeName(wire::TypeOf(m))) +
                                      " is not a request"));
    return;
  }
  if (!admitted.count(TokenKey(*session))) {
    SendError(conn, request_id,
              Status::PermissionDenied(std::string(wire::MessageTypeName(wire::TypeOf(m))) +
                                       " refused: the handshake has not completed"));
    return;
  }
  if (auto* lookup = std::get_if<wire::LookupRequest>(&m)) {
    if (options.directory == nullptr) {
      SendError(conn, lookup->request_id, Status::NotSupported("this node keeps no directory"));
      return;
    }
    wire::LookupResponse resp = options.directory->Lookup(*lookup);
    resp.request_id = lookup->request_id;
    SendMessage(conn, resp);
  } else if (auto* ann = std::get_if<wire::Announce>(&m)) {
    if (options.directory == nullptr) {
      SendError(conn, ann->request_id, Status::NotSupported("this node keeps no directory"));
      return;
    }
    Status st = options.directory->Announce(*ann);
    if (st.ok())
      SendMessage(conn, wire::AnnounceAck{ann->request_id});
    else
      SendError(conn, ann->request_id, st);
  } else if (auto* pull = std::get_if<wire::PullRequest>(&m)) {
    ServePull(conn, *pull);
  } else if (auto* release = std::get_if<wire::PullRelease>(&m)) {
    OnPullRelease(*release);
  }
}

// ---- client helpers (run on the progress thread) ----
void PeerTransport::Impl::StartSession(const std::string& peer, std::vector<std::byte> address,
                  std::shared_ptr<std::promise<Status>> waiter) {
  if (auto b = connect_backoff.find(peer); b != connect_backoff.end()) {
    if (b->second.address != address) {
      connect_backoff.erase(b);  // a new incarnation of the peer: dial it now
    } else if (Clock::now() < b->second.next) {
      const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(
          b->second.next - Clock::now());
      // The last attempt's code (a peer that refused the secret stays PermissionDenied).
      const StatusCode code =
          b->second.last.ok() ? StatusCode::kUnavailable : b->second.last.code();
      waiter->set_value(Status(code,
                               "peer " + peer + " could not be reached (" +
                                   b->second.last.ToString() + "); next attempt in " +
                                   std::to_string(wait.count()) + " ms"));
      return;
    }
  }
  auto it = sessions.find(peer);
  if (it != sessions.end()) {
    if (it->second.address == address) {
      if (it->second.ready)
        waiter->set_value(Status::OK());
      else
        it->second.waiters.push_back(std::move(waiter));
      return;
    }
    FailConn(it->second.conn, Status::Aborted("peer address changed"), true);
  }
  auto conn = engine->Connect(address);
  if (!conn.ok()) {
    NoteUnreachable(peer, address, conn.status());
    waiter->set_value(conn.status());
    return;
  }
  Session s;
  s.peer = peer;
  s.conn = *conn;
  if (!options.data_peer_errors) {
    auto data = engine->Connect(address, PeerFailure::kDetectedByCaller);
    if (!data.ok()) {
      engine->Close(*conn, /*force=*/true);
      NoteUnreachable(peer, address, data.status());
      waiter->set_value(data.status());
      return;
    }
    s.data_conn = *data;
    client_conns[*data] = peer;
  }
  s.address = std::move(address);
  s.client_nonce = wire::RandomNonce();
  s.handshake_id = next_request.fetch_add(1);
  s.deadline = Clock::now() + options.request_timeout;
  s.waiters.push_back(std::move(waiter));
  client_conns[*conn] = peer;
  handshakes[s.handshake_id] = peer;
  SendMessage(*conn, wire::Hello{wire::kProtocolVersion, options.node_id, s.client_nonce,
                                 engine->worker_address(), s.handshake_id});
  sessions[peer] = std::move(s);
}

}  // namespace strata::transport
