#include "transport/peer_transport.h"

#include <algorithm>
#include <cstring>
#include <deque>
#include <future>
#include <limits>
#include <unordered_map>

#include "strata/block_format.h"
#include "transport/wire/auth.h"

namespace strata::transport {

using Clock = std::chrono::steady_clock;

// How long a timed-out pull waits for UCX to report its cancelled receives before giving up on
// them (the connection is closed by then).
constexpr std::chrono::milliseconds kCancelGrace{300};

size_t PullResult::LeadingOk() const {
  size_t n = 0;
  while (n < blocks.size() && blocks[n].ok()) ++n;
  return n;
}

struct PullOp::State {
  PeerTransport::Impl* impl = nullptr;
  std::string peer;
  ConnId conn = 0;
  uint64_t request_id = 0;
  NamespaceId ns;
  std::vector<PullTarget> targets;
  std::vector<std::byte> frame;
  // Progress-thread state.
  std::vector<Status> status;
  std::vector<uint8_t> settled;
  size_t unsettled = 0;
  size_t receiving = 0;  // accepted data messages whose bytes have not landed or failed yet
  size_t bytes = 0;
  Status failure;        // set when the connection failed or the request timed out
  Clock::time_point deadline;
  Clock::time_point posted_at;   // when the progress thread issued the request
  Clock::time_point first_data;  // the first data message's header arrived
  double verify_s = 0;           // progress-thread time in payload verification
  bool posted = false;
  bool finished = false;
  std::promise<PullResult> promise;
  std::future<PullResult> future = promise.get_future();
};

struct PeerTransport::Impl {
  struct Waiter {
    std::shared_ptr<std::promise<Status>> promise;
  };
  // Client side of a connection, by peer id.
  struct Session {
    std::string peer;
    ConnId conn = 0;       // control endpoint (UCX peer error handling)
    ConnId data_conn = 0;  // pulls; 0: they ride `conn` (options.data_peer_errors)
    std::vector<std::byte> address;
    ConnId PullConn() const { return data_conn != 0 ? data_conn : conn; }
    bool ready = false;
    std::vector<std::byte> client_nonce;
    uint64_t handshake_id = 0;
    std::vector<std::byte> token;  // from AuthOk; sent with every request
    Clock::time_point deadline;
    std::vector<std::shared_ptr<std::promise<Status>>> waiters;
    std::vector<std::shared_ptr<std::promise<Status>>> raw_waiters;
  };
  // Server side of a handshake in progress, by client id.
  struct PendingHandshake {
    uint64_t request_id = 0;
    std::vector<std::byte> client_nonce;
    std::vector<std::byte> server_nonce;
  };
  struct Rpc {
    ConnId conn = 0;
    Clock::time_point deadline;
    std::shared_ptr<std::promise<Result<wire::Message>>> promise;
  };

  PeerTransportOptions options;
  std::unique_ptr<UcxEngine> engine;
  // Request ids start at a random point so that another peer cannot guess them.
  std::atomic<uint64_t> next_request{RandomStart()};
  static uint64_t RandomStart() {
    auto n = wire::RandomNonce();
    uint64_t v = 0;
    std::memcpy(&v, n.data(), sizeof(v));
    return (v >> 24) | 1;  // leaves room below 2^44 for the data cookie's request bits
  }

  // Progress-thread state.
  std::unordered_map<std::string, Session> sessions;
  std::unordered_map<ConnId, std::string> client_conns;  // conn -> session key
  std::unordered_map<uint64_t, std::string> handshakes;   // handshake id -> session key
  // Admission, by session token rather than by connection: UCX may deliver one peer's messages
  // on more than one endpoint (two nodes that connect to each other share a matched pair).
  std::unordered_map<std::string, PendingHandshake> pending_handshakes;  // by client id
  std::unordered_map<std::string, std::string> admitted;         // token -> client id
  std::unordered_map<std::string, std::string> token_of_client;  // client id -> token
  std::unordered_map<uint64_t, Rpc> rpcs;
  std::unordered_map<uint64_t, std::shared_ptr<PullOp::State>> pulls;
  // Server side: a block pinned for a send. Released when the send completes, or at `deadline`
  // (two request timeouts after the request came: the puller has given the pull up by then) if
  // it never does: a puller that died may leave the send pending forever on an endpoint without
  // peer error handling. A send that completes after its pin was released may carry bytes the
  // pool reused; the puller's checksum refuses them.
  struct ServedPin {
    uint64_t pin = 0;
    Clock::time_point deadline;
    bool released = false;
  };
  std::deque<std::shared_ptr<ServedPin>> served_pins;  // by deadline (requests come in order)

  void ReleasePin(ServedPin& sp) {
    if (sp.released) return;
    sp.released = true;
    options.block_source->Unpin(sp.pin);
  }

  static constexpr int kIndexBits = 20;

  // ---- helpers ----
  void SendMessage(ConnId conn, const wire::Message& m) {
    auto frame = wire::EncodeFrame(m);
    if (!frame.ok()) return;  // only our own messages: limits are checked where they are built
    engine->SendControl(conn, std::move(*frame));
  }

  void SendError(ConnId conn, uint64_t request_id, const Status& st) {
    SendMessage(conn, wire::ErrorMessage{request_id, st.code(), std::string(st.message())});
  }

  void Settle(PullOp::State& p, size_t index, Status st) {
    if (p.settled[index]) return;
    p.settled[index] = 1;
    p.status[index] = std::move(st);
    --p.unsettled;
  }

  void MaybeFinish(const std::shared_ptr<PullOp::State>& p) {
    if (p->finished) return;
    const bool done = p->unsettled == 0 || (!p->failure.ok() && p->receiving == 0);
    if (!done) return;
    p->finished = true;
    PullResult r;
    r.blocks = std::move(p->status);
    for (size_t i = 0; i < r.blocks.size(); ++i)
      if (!p->settled[i]) r.blocks[i] = p->failure;
    r.bytes = p->bytes;
    const auto now = Clock::now();
    if (p->first_data != Clock::time_point{})
      r.first_data_s = std::chrono::duration<double>(p->first_data - p->posted_at).count();
    if (p->posted_at != Clock::time_point{})
      r.last_data_s = std::chrono::duration<double>(now - p->posted_at).count();
    r.verify_s = p->verify_s;
    pulls.erase(p->request_id);
    p->promise.set_value(std::move(r));
  }

  // Fails everything that rides on `conn` and, when `conn` belongs to a session, on the
  // session's other endpoint; force-closes `conn` when `close`, the other endpoint always.
  void FailConn(ConnId conn, const Status& st, bool close) {
    ConnId other = 0;
    if (auto it = client_conns.find(conn); it != client_conns.end()) {
      const std::string key = it->second;
      client_conns.erase(it);
      auto s = sessions.find(key);
      if (s != sessions.end() && (s->second.conn == conn || s->second.data_conn == conn)) {
        other = s->second.conn == conn ? s->second.data_conn : s->second.conn;
        if (other != 0) client_conns.erase(other);
        for (auto& w : s->second.waiters) w->set_value(st);
        for (auto& w : s->second.raw_waiters) w->set_value(st);
        handshakes.erase(s->second.handshake_id);
        sessions.erase(s);
      }
    }
    auto hit_conn = [&](ConnId c) { return c == conn || (other != 0 && c == other); };
    for (auto it = rpcs.begin(); it != rpcs.end();) {
      if (hit_conn(it->second.conn)) {
        it->second.promise->set_value(st);
        it = rpcs.erase(it);
      } else {
        ++it;
      }
    }
    std::vector<std::shared_ptr<PullOp::State>> hit;
    for (auto& [id, p] : pulls)
      if (hit_conn(p->conn)) hit.push_back(p);
    for (auto& p : hit) {
      if (p->failure.ok()) p->failure = st;
      MaybeFinish(p);
    }
    if (close) engine->Close(conn, /*force=*/true);
    // Force-closing a data endpoint cancels the receives still writing into the pool.
    if (other != 0) engine->Close(other, /*force=*/true);
  }

  void OnTick() {
    const auto now = Clock::now();
    while (!served_pins.empty() &&
           (served_pins.front()->released || served_pins.front()->deadline < now)) {
      ReleasePin(*served_pins.front());
      served_pins.pop_front();
    }
    std::vector<ConnId> expired;
    for (auto& [peer, s] : sessions)
      if (!s.ready && now > s.deadline) expired.push_back(s.conn);
    for (auto& [id, r] : rpcs)
      if (now > r.deadline) expired.push_back(r.conn);
    for (auto& [id, p] : pulls) {
      if (!p->posted || p->finished) continue;
      if (now > p->deadline && p->failure.ok()) expired.push_back(p->conn);
      // Last resort: UCX never reported the cancelled receives (a force-closed endpoint without
      // peer error mode may not, on tcp). The endpoint is closed by then, so nothing more lands;
      // a short grace, not a second request timeout, keeps a dead peer's cost near one timeout.
      if (now > p->deadline + std::min<std::chrono::milliseconds>(options.request_timeout,
                                                                   kCancelGrace))
        p->receiving = 0;
    }
    for (ConnId c : expired)
      FailConn(c, Status::TimedOut("peer did not answer within " +
                                   std::to_string(options.request_timeout.count()) + " ms"),
               /*close=*/true);
    std::vector<std::shared_ptr<PullOp::State>> all;
    for (auto& [id, p] : pulls) all.push_back(p);
    for (auto& p : all) MaybeFinish(p);
  }

  bool InsideRegions(const std::byte* p, size_t n) const {
    for (const MemoryRegion& r : options.regions) {
      const auto* base = static_cast<const std::byte*>(r.base);
      if (p >= base && p + n <= base + r.size) return true;
    }
    return false;
  }

  // ---- data messages (puller side) ----
  void OnData(ConnId conn, std::span<const std::byte> header, size_t length, std::byte** dest,
              uint64_t* cookie) {
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
    if (p.first_data == Clock::time_point{}) p.first_data = Clock::now();
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
  }

  void OnDataDone(ConnId conn, uint64_t cookie, const Status& st) {
    const uint64_t rid = cookie >> kIndexBits;
    const size_t index = cookie & ((uint64_t{1} << kIndexBits) - 1);
    auto it = pulls.find(rid);
    if (it == pulls.end()) return;
    auto p = it->second;
    if (p->receiving > 0) --p->receiving;
    if (!st.ok()) {
      // A receive cancelled because the pull failed reports why the pull failed.
      Settle(*p, index, p->failure.ok() ? st : p->failure);
    } else {
      Settle(*p, index, Verify(*p, index));
    }
    MaybeFinish(p);
  }

  Status Verify(PullOp::State& p, size_t index) {
    const PullTarget& t = p.targets[index];
    const bool split = t.header_dest != nullptr;
    auto h = split ? DecodeBlockHeader(std::span<const std::byte>(t.header_dest, kBlockHeaderSize))
                   : DecodeBlockHeader(std::span<const std::byte>(t.dest, t.capacity));
    if (!h.ok()) return h.status().WithContext("pulled block " + t.key.ToHex());
    if (h->key != t.key) return Status::Corruption("pulled block has another key");
    if (p.ns != NamespaceId{} && h->ns != p.ns)
      return Status::Corruption("pulled block has another namespace");
    const std::byte* payload = split ? t.dest : t.dest + kBlockHeaderSize;
    if (h->payload_length + (split ? 0 : kBlockHeaderSize) > t.capacity)
      return Status::Corruption("pulled block is longer than the bytes received");
    const auto t0 = Clock::now();
    Status verified = VerifyPayload(*h, std::span<const std::byte>(payload, h->payload_length));
    p.verify_s += std::chrono::duration<double>(Clock::now() - t0).count();
    STRATA_RETURN_IF_ERROR(verified);
    p.bytes += kBlockHeaderSize + h->payload_length;
    return Status::OK();
  }

  // ---- control messages ----
  // Requests go to the server side, responses to the client side. The connection alone cannot
  // tell: when two nodes connect to each other, UCX may deliver a peer's requests on the endpoint
  // we created towards it.
  void OnControl(ConnId conn, std::span<const std::byte> bytes) {
    bool response = false;
    if (bytes.size() >= wire::kFrameHeaderSize) {
      const auto type = static_cast<wire::MessageType>(static_cast<uint16_t>(bytes[6]) |
                                                       (static_cast<uint16_t>(bytes[7]) << 8));
      response = type == wire::MessageType::kHelloAck || type == wire::MessageType::kAuthOk ||
                 type == wire::MessageType::kError ||
                 type == wire::MessageType::kLookupResponse ||
                 type == wire::MessageType::kAnnounceAck;
    }
    if (response && client_conns.count(conn)) {
      OnClientControl(conn, bytes);
    } else {
      OnServerControl(conn, bytes);
    }
  }

  void OnClientControl(ConnId conn, std::span<const std::byte> bytes) {
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
      s->token = ok->session;
      handshakes.erase(s->handshake_id);
      for (auto& w : s->waiters) w->set_value(Status::OK());
      s->waiters.clear();
    } else if (auto* err = std::get_if<wire::ErrorMessage>(&m)) {
      if (Session* s = session_for(err->request_id); s != nullptr && !s->ready) {
        FailConn(s->conn, err->ToStatus().WithContext("peer refused the handshake"), true);
      } else if (auto r = rpcs.find(err->request_id); r != rpcs.end()) {
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
    } else {
      uint64_t id = 0;
      if (auto* lr = std::get_if<wire::LookupResponse>(&m)) id = lr->request_id;
      if (auto* aa = std::get_if<wire::AnnounceAck>(&m)) id = aa->request_id;
      auto r = rpcs.find(id);
      if (id == 0 || r == rpcs.end()) return;
      r->second.promise->set_value(std::move(m));
      rpcs.erase(r);
    }
  }

  static std::string TokenKey(const std::vector<std::byte>& t) {
    return std::string(reinterpret_cast<const char*>(t.data()), t.size());
  }

  void OnServerControl(ConnId conn, std::span<const std::byte> bytes) {
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
      SendMessage(conn, wire::AuthOk{auth->request_id, token});
      return;
    }
    if (std::holds_alternative<wire::ErrorMessage>(m)) return;  // never answer an Error
    const std::vector<std::byte>* session = nullptr;
    uint64_t request_id = 0;
    if (auto* x = std::get_if<wire::LookupRequest>(&m)) session = &x->session, request_id = x->request_id;
    if (auto* x = std::get_if<wire::Announce>(&m)) session = &x->session, request_id = x->request_id;
    if (auto* x = std::get_if<wire::PullRequest>(&m)) session = &x->session, request_id = x->request_id;
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
    }
  }

  void SendBlockStatus(ConnId conn, uint64_t rid, uint32_t index, StatusCode code) {
    std::array<std::byte, wire::kDataHeaderSize> hdr;
    wire::EncodeDataHeader(wire::DataHeader{code, rid, index, 0}, hdr);
    engine->SendData(conn, hdr, nullptr, 0, {});
  }

  void ServePull(ConnId conn, const wire::PullRequest& req) {
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

  // ---- client helpers (run on the progress thread) ----
  void StartSession(const std::string& peer, std::vector<std::byte> address,
                    std::shared_ptr<std::promise<Status>> waiter) {
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

  // Runs `fn` on the progress thread and waits for its value.
  template <typename T, typename Fn>
  T RunSync(Fn fn) {
    auto promise = std::make_shared<std::promise<T>>();
    auto future = promise->get_future();
    engine->Post([promise, fn = std::move(fn)]() mutable { promise->set_value(fn()); });
    return future.get();
  }

  Result<wire::Message> Call(const std::string& peer, wire::Message m, uint64_t id) {
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
};

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
  return state_->future.get();
}

// ---- PeerTransport ----

PeerTransport::PeerTransport(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

PeerTransport::~PeerTransport() {
  impl_->engine.reset();  // joins the progress thread; everything below is single-threaded
  for (auto& sp : impl_->served_pins) impl_->ReleasePin(*sp);
  const Status st = Status::Aborted("transport shut down");
  for (auto& [peer, s] : impl_->sessions) {
    for (auto& w : s.waiters) w->set_value(st);
    for (auto& w : s.raw_waiters) w->set_value(st);
  }
  for (auto& [id, r] : impl_->rpcs) r.promise->set_value(st);
  std::vector<std::shared_ptr<PullOp::State>> all;
  for (auto& [id, p] : impl_->pulls) all.push_back(p);
  for (auto& p : all) {
    p->failure = st;
    p->receiving = 0;
    impl_->MaybeFinish(p);
  }
}

Result<std::unique_ptr<PeerTransport>> PeerTransport::Open(PeerTransportOptions options) {
  if (options.node_id.empty()) return Status::InvalidArgument("PeerTransport: empty node id");
  if (options.cluster_secret.size() < 16)
    return Status::InvalidArgument("PeerTransport: the cluster secret must be >= 16 bytes");
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  Impl* raw = impl.get();
  UcxEngineOptions eo;
  eo.name = "strata-" + raw->options.node_id;
  eo.tls = raw->options.tls;
  eo.listen_addr = raw->options.listen_addr;
  eo.regions = raw->options.regions;
  eo.spin_rounds = raw->options.progress_spin_rounds < 0 ? std::numeric_limits<int>::max()
                                                         : raw->options.progress_spin_rounds;
  eo.handlers.on_control = [raw](ConnId c, std::span<const std::byte> b) { raw->OnControl(c, b); };
  eo.handlers.on_data = [raw](ConnId c, std::span<const std::byte> h, size_t n, std::byte** d,
                              uint64_t* k) { raw->OnData(c, h, n, d, k); };
  eo.handlers.on_data_done = [raw](ConnId c, uint64_t k, const Status& s) {
    raw->OnDataDone(c, k, s);
  };
  eo.handlers.on_conn_error = [raw](ConnId c, const Status& s) { raw->FailConn(c, s, false); };
  eo.handlers.on_tick = [raw] { raw->OnTick(); };
  STRATA_ASSIGN_OR_RETURN(impl->engine, UcxEngine::Open(std::move(eo)));
  return std::unique_ptr<PeerTransport>(new PeerTransport(std::move(impl)));
}

const std::string& PeerTransport::node_id() const { return impl_->options.node_id; }
const std::vector<std::byte>& PeerTransport::worker_address() const {
  return impl_->engine->worker_address();
}
const std::string& PeerTransport::tls() const { return impl_->engine->tls(); }

Status PeerTransport::Connect(const std::string& peer, std::span<const std::byte> address) {
  auto waiter = std::make_shared<std::promise<Status>>();
  auto future = waiter->get_future();
  std::vector<std::byte> addr(address.begin(), address.end());
  impl_->engine->Post([impl = impl_.get(), peer, addr = std::move(addr), waiter]() mutable {
    impl->StartSession(peer, std::move(addr), std::move(waiter));
  });
  return future.get();
}

void PeerTransport::Disconnect(const std::string& peer) {
  impl_->engine->Post([impl = impl_.get(), peer] {
    auto it = impl->sessions.find(peer);
    if (it != impl->sessions.end())
      impl->FailConn(it->second.conn, Status::Aborted("disconnected"), true);
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
  wire::PullRequest req;
  req.request_id = st->request_id;
  req.namespace_id = ns;
  for (const PullTarget& t : targets) {
    req.keys.push_back(t.key);
    // On the wire a capacity counts the whole block (header + payload).
    req.capacities.push_back(t.capacity + (t.header_dest != nullptr ? kBlockHeaderSize : 0));
  }
  // Resolve the session now, so that Post() only issues.
  using ConnAndToken = std::pair<ConnId, std::vector<std::byte>>;
  auto conn = impl_->RunSync<Result<ConnAndToken>>(
      [impl = impl_.get(), peer]() -> Result<ConnAndToken> {
        auto it = impl->sessions.find(peer);
        if (it == impl->sessions.end() || !it->second.ready)
          return Status::Unavailable("no session with peer " + peer + " (Connect first)");
        return ConnAndToken{it->second.PullConn(), it->second.token};
      });
  if (!conn.ok()) return conn.status();
  st->conn = conn->first;
  req.session = conn->second;
  STRATA_ASSIGN_OR_RETURN(st->frame, wire::EncodeFrame(req));
  st->status.assign(targets.size(), Status::OK());
  st->settled.assign(targets.size(), 0);
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
