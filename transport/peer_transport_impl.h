// The PeerTransport's private state (transport/peer_transport.h), shared by the files that
// implement it, one concept each:
//   peer_transport.cc   the transport's core: open, connect, failures and timeouts, the
//                       control-message dispatch
//   peer_session.cc     sessions: the handshake and admission (transport/wire/auth.h), and the
//                       server side of control requests
//   peer_rpc.cc         request/response calls: lookups, announces, raw test messages
//   pull_client.cc      pulls: prepare/post/wait, data landing, verification
//   pull_server.cc      serving pulls from the BlockSource
//   peer_pool_mapping.* a same-host holder's pool mapped by the puller (mapped pulls)
// Everything here runs on the engine's progress thread unless a comment says otherwise.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "transport/peer_pool_mapping.h"
#include "transport/peer_transport.h"
#include "transport/wire/auth.h"

namespace strata::transport {

using Clock = std::chrono::steady_clock;

// A pull on a data endpoint without UCX peer error handling that has seen no data for this long
// makes the transport probe the session's control endpoint (which has it): an empty directory
// lookup, at most once per this interval per session. Over tcp an idle endpoint does not notice
// that its peer died, but a send to a dead peer fails, so a holder killed mid-pull is noticed
// within about this long plus a round trip instead of at the request timeout. The probe is a
// request of its own (an Rpc with its own id, which nobody waits for): a live holder answers it
// with an empty LookupResponse, or an Error without a directory, under that id, and the answer
// is matched to the probe and counted (TransferProfile::probes_answered), never taken for an
// answer to something else; a probe unanswered within the request timeout fails the session.
inline constexpr std::chrono::milliseconds kProbeAfter{100};

struct PullOp::State {
  PeerTransport::Impl* impl = nullptr;
  std::string peer;
  ConnId conn = 0;
  uint64_t request_id = 0;
  NamespaceId ns;
  std::vector<PullTarget> targets;
  std::vector<std::byte> frame;
  uint64_t max_message_bytes = 0;  // what the request asked for (0: one block per message)
  // Multi-block data messages accepted: the indices each carries (progress thread).
  std::vector<std::vector<uint32_t>> messages;
  // Progress-thread state.
  std::vector<Status> status;
  std::vector<uint8_t> settled;
  size_t unsettled = 0;
  size_t receiving = 0;  // accepted data messages whose bytes have not landed or failed yet
  // Per block: receives UCX accepted into its place and has not reported yet. A pull that ends
  // with one outstanding (it failed) holds the place (PullResult::held): UCX offers no way to
  // cancel an active-message receive (ucp_request_cancel cancels only tag receives), and tcp
  // keeps reading a connection whose endpoint was force-closed (uct_tcp_ep_destroy keeps its
  // receive side), so its bytes may still land; docs/cluster.md, "Where a dead holder's time
  // goes".
  std::vector<uint16_t> in_ucx;
  std::vector<std::function<void()>> on_release;  // PullOp::ReleaseHeld's, by block
  Status failure;        // set when the connection failed or the request timed out
  Clock::time_point deadline;
  Clock::time_point posted_at;   // when the progress thread issued the request
  Clock::time_point first_data;  // the first data message's header arrived
  Clock::time_point last_data;   // the latest data message arrived or landed (kProbeAfter)
  // Blocks verified on the progress thread as they landed (verify_on_landing): their bytes and
  // the time it took.
  size_t landed_bytes = 0;
  double landed_verify_s = 0;
  // Blocks whose bytes landed, handed to the thread in PullOp::Wait, which verifies them (block
  // header, key, namespace, XXH3-64) off the progress thread while later blocks still arrive.
  std::mutex verify_mu;
  std::condition_variable verify_cv;
  std::vector<uint32_t> to_verify;  // GUARDED_BY(verify_mu)
  bool all_settled = false;         // GUARDED_BY(verify_mu): MaybeFinish ran
  // Mapped pulls (a same-host holder whose pool this node maps): the mapping, the session token
  // for the PullRelease, and the blocks the holder answered with where they lie, handed to the
  // thread in PullOp::Wait, which reserves, copies and verifies them (CopyWithChecksum).
  std::shared_ptr<PeerPoolMapping> mapping;  // null: the pull asks for bytes
  std::vector<std::byte> token;
  std::vector<wire::MappedBlock> to_copy;  // GUARDED_BY(verify_mu)
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
    Clock::time_point probed;      // the last probe of `conn` (kProbeAfter)
    std::shared_ptr<PeerPoolMapping> mapping;  // the holder's pool, when mapped pulls hold
    Clock::time_point deadline;
    std::vector<std::shared_ptr<std::promise<Status>>> waiters;
    std::vector<std::shared_ptr<std::promise<Status>>> raw_waiters;
  };
  // A peer whose last session failed before its handshake completed (its process gone, its
  // port closed, or it never answered) is not dialled again before `next`: otherwise every
  // caller (membership updates, the directory's announces every 50 ms, each Fetch) starts a
  // new connection to it, and UCX logs each refused connect as an ERROR. The delay doubles
  // from kFirstConnectBackoff to kMaxConnectBackoff; a session that completes, or a new address
  // for the peer (a restarted node), clears it.
  static constexpr auto kFirstConnectBackoff = std::chrono::milliseconds(100);
  static constexpr auto kMaxConnectBackoff = std::chrono::milliseconds(2000);
  struct ConnectBackoff {
    std::vector<std::byte> address;
    Clock::time_point next;
    std::chrono::milliseconds delay{0};
    Status last;  // why the last attempt failed
  };
  std::unordered_map<std::string, ConnectBackoff> connect_backoff;  // by peer id
  // `peer` at `address` could not be reached (`why`): not dialled again before the backoff.
  void NoteUnreachable(const std::string& peer, const std::vector<std::byte>& address,
                       const Status& why);
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
    bool probe = false;  // a quiet pull's probe (kProbeAfter): nobody waits for the answer
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

  // The ready sessions' endpoints for pulls and tokens, readable from any thread, so that
  // Connect to a connected peer and PreparePull need no round trip through the progress thread
  // (two wake-ups of it per Fetch otherwise). Written by the progress thread when a handshake
  // completes and when a session fails; a reader that finds a session that is failing meanwhile
  // learns it at Post (which checks the session on the progress thread).
  struct ReadySession {
    std::vector<std::byte> address;
    ConnId pull_conn = 0;
    std::vector<std::byte> token;
    std::shared_ptr<PeerPoolMapping> mapping;
  };
  std::mutex ready_mu;
  std::unordered_map<std::string, ReadySession> ready_sessions;  // GUARDED_BY(ready_mu)
  void PublishReady(const Session& s) {
    std::lock_guard<std::mutex> lock(ready_mu);
    ready_sessions[s.peer] = ReadySession{s.address, s.PullConn(), s.token, s.mapping};
  }
  void UnpublishReady(const std::string& peer) {
    std::lock_guard<std::mutex> lock(ready_mu);
    ready_sessions.erase(peer);
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
  // Pulls that ended while UCX still had receives into their places (PullResult::held), until
  // UCX reports the last of them.
  std::unordered_map<uint64_t, std::shared_ptr<PullOp::State>> held_pulls;
  // Receives UCX ended with an error (their endpoint failed: the holder died, or the endpoint
  // was closed), counted as reported only kFailedReceiveGrace later: the failure comes as the
  // first of the dead peer's sockets closes, and bytes it had already sent on another may still
  // be waiting in this host's socket buffers for the next progress rounds. A dead peer sends
  // nothing new, so past the grace no late write can reach the place.
  static constexpr auto kFailedReceiveGrace = std::chrono::milliseconds(250);
  struct FailedReceive {
    Clock::time_point due;
    std::shared_ptr<PullOp::State> pull;
    uint64_t cookie = 0;
  };
  std::deque<FailedReceive> quarantined_receives;
  // Server side: a block pinned for a send. Released when the send completes, or at `deadline`
  // (two request timeouts after the request came: the puller has given the pull up by then) if
  // it never does: a puller that died may leave the send pending forever on an endpoint without
  // peer error handling. A send that completes after its pin was released may carry bytes the
  // pool reused; the puller's checksum refuses them.
  struct ServedPin {
    uint64_t pin = 0;
    Clock::time_point deadline;
    bool released = false;
    bool mapped = false;  // answered with where it lies (a mapped pull): no send releases it
  };
  std::deque<std::shared_ptr<ServedPin>> served_pins;  // by deadline (requests come in order)
  // A mapped pull's pins, by request id, until the puller's PullRelease (from the session that
  // asked) or their deadline.
  struct MappedPins {
    std::string token;
    Clock::time_point deadline;
    std::vector<std::shared_ptr<ServedPin>> pins;
  };
  std::unordered_map<uint64_t, MappedPins> mapped_pins;
  // What this node offers same-host pullers in AuthOk (options.mapped_pulls and a BlockSource).
  std::optional<wire::SameHost> same_host_offer;
  // Peers whose fallback from mapped pulls was logged (once each); any thread.
  std::mutex fallback_mu;
  std::set<std::string> fallback_logged;  // GUARDED_BY(fallback_mu)
  // Logs (once per peer) and counts why pulls from `peer` do not map its pool.
  void NoteMappedFallback(const std::string& peer, const std::string& why);

  void ReleasePin(ServedPin& sp) {
    if (sp.released) return;
    sp.released = true;
    options.block_source->Unpin(sp.pin);
  }

  // A data receive's cookie: the request id above kIndexBits; below, a block's index, or with
  // kMultiBit the slot of a multi-block message in PullOp::State::messages (indices and slots
  // stay below 2^16: wire::kMaxKeysPerMessage).
  static constexpr int kIndexBits = 20;
  static constexpr uint64_t kMultiBit = uint64_t{1} << 19;
  // Where the bytes of a refused block inside an accepted multi-block message go: never read.
  // Sized at Open to pull_coalesce_bytes (a message longer than its request asked is refused
  // whole); several receives may write into it at once.
  std::vector<std::byte> discard;

  // TransferProfile's counters; written on the progress thread, read by Profile() anywhere.
  struct ProfileCounters {
    std::atomic<uint64_t> pull_requests{0}, pull_blocks{0}, max_pulls_in_flight{0};
    std::atomic<uint64_t> served_requests{0}, served_blocks{0}, served_messages{0};
    std::atomic<uint64_t> served_contiguous{0}, landed_multi{0}, landed_contiguous{0};
    std::atomic<uint64_t> probes{0}, probes_answered{0};
    std::atomic<uint64_t> serve_pin_ns{0}, serve_request_ns{0}, send_ns{0};
    std::atomic<uint64_t> max_sends_in_flight{0};
    std::atomic<uint64_t> mapped_sessions{0}, mapped_fallbacks{0}, mapped_blocks{0};
    std::atomic<uint64_t> mapped_bytes{0}, mapped_failures{0}, mapped_copy_ns{0};
    std::atomic<uint64_t> served_mapped{0}, mapped_released{0}, mapped_expired{0};
    std::atomic<uint64_t> held_blocks{0}, held_released{0}, failed_receives{0};
    std::atomic<uint64_t> connect_backoffs{0};
    uint64_t sends_in_flight = 0;  // progress thread only
  };
  ProfileCounters prof;
  static void RaiseTo(std::atomic<uint64_t>& max, uint64_t v) {
    if (v > max.load(std::memory_order_relaxed)) max.store(v, std::memory_order_relaxed);
  }
  static uint64_t NsSince(Clock::time_point t) {
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t).count());
  }

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

  void MaybeFinish(const std::shared_ptr<PullOp::State>& p);

  // Fails everything that rides on `conn` and, when `conn` belongs to a session, on the
  // session's other endpoint; force-closes `conn` when `close`, the other endpoint always.
  void FailConn(ConnId conn, const Status& st, bool close);

  void OnTick();

  bool InsideRegions(const std::byte* p, size_t n) const {
    for (const MemoryRegion& r : options.regions) {
      const auto* base = static_cast<const std::byte*>(r.base);
      if (p >= base && p + n <= base + r.size) return true;
    }
    return false;
  }

  // [p, p + n) lies inside one registration unit of a region: one memory handle covers it.
  bool InsideOneUnit(const std::byte* p, size_t n) const {
    for (const MemoryRegion& r : options.regions) {
      const auto* base = static_cast<const std::byte*>(r.base);
      if (p < base || p + n > base + r.size) continue;
      if (r.unit == 0) return true;
      const size_t first = static_cast<size_t>(p - base) / r.unit;
      return n == 0 || static_cast<size_t>(p + n - 1 - base) / r.unit == first;
    }
    return false;
  }

  // ---- data messages (puller side) ----
  void OnData(ConnId conn, std::span<const std::byte> header, size_t length, std::byte** dest,
              std::vector<DataPiece>* pieces, uint64_t* cookie);
  // A multi-block data message (wire::MultiDataHeader): each block to its own place, into
  // *dest as one buffer when those places follow each other, else into *pieces.
  void OnMultiData(std::span<const std::byte> header, size_t length, std::byte** dest,
                   std::vector<DataPiece>* pieces, uint64_t* cookie);
  // Settles block `index` of `p` whose receive ended with `st`: verified now
  // (verify_on_landing) or handed to the thread in PullOp::Wait.
  void Landed(PullOp::State& p, size_t index, const Status& st);

  void OnDataDone(ConnId conn, uint64_t cookie, const Status& st);
  // UCX reported a receive of a pull that has ended (held_pulls): the places it wrote are
  // released once no receive into them is left.
  void HeldReceiveDone(const std::shared_ptr<PullOp::State>& p, uint64_t cookie);
  // A receive of `p` no longer in UCX's hands (reported, or failed and past its grace): counts
  // it off the pull in flight, or off the ended pull's held places.
  void ReceiveReported(const std::shared_ptr<PullOp::State>& p, uint64_t cookie);
  // Calls fn(i) for every block index the receive `cookie` of `p` carries.
  template <typename Fn>
  static void ForEachIndex(const PullOp::State& p, uint64_t cookie, Fn&& fn);
  // UCX has no receive left into block `index`'s place: runs its release, if one was given.
  void MaybeRelease(PullOp::State& p, size_t index);

  // Checks a landed block (header, key, namespace, payload checksum); adds its bytes to *bytes
  // when it passes. Runs on the progress thread as the block lands (verify_on_landing) or on
  // the thread in PullOp::Wait.
  static Status Verify(const PullTarget& t, const NamespaceId& ns, size_t* bytes);

  // ---- mapped pulls (puller side) ----
  // The holder's answer to a mapped pull: each block it names is settled (OK for now) and
  // handed to the thread in PullOp::Wait, which copies it out (CopyMapped).
  void OnMappedBlocks(const wire::MappedBlocks& m);
  // On the thread in PullOp::Wait: reserves the block's place (target.allocate, or its dest),
  // copies the payload out of the holder's mapping with CopyWithChecksum and compares the sum
  // with the header's checksum; adds its bytes to *bytes when it passes.
  static Status CopyMapped(PullOp::State& s, const wire::MappedBlock& b, size_t* bytes);
  // The session's answer to the handshake says where the holder runs: maps its pool when it is
  // on this host and lets this process take its descriptors, else notes the fallback.
  void SetUpMapping(Session& s, const std::optional<wire::SameHost>& holder);
  // ---- mapped pulls (holder side) ----
  void OnPullRelease(const wire::PullRelease& m);

  // ---- control messages ----
  // Requests go to the server side, responses to the client side. The connection alone cannot
  // tell: when two nodes connect to each other, UCX may deliver a peer's requests on the endpoint
  // we created towards it.
  void OnControl(ConnId conn, std::span<const std::byte> bytes);

  void OnClientControl(ConnId conn, std::span<const std::byte> bytes);

  static std::string TokenKey(const std::vector<std::byte>& t) {
    return std::string(reinterpret_cast<const char*>(t.data()), t.size());
  }

  void OnServerControl(ConnId conn, std::span<const std::byte> bytes);

  void SendBlockStatus(ConnId conn, uint64_t rid, uint32_t index, StatusCode code);

  void ServePull(ConnId conn, const wire::PullRequest& req);

  // A multi-block data message being gathered by ServePull.
  struct Batch {
    uint64_t rid = 0;
    uint64_t bytes = 0;
    std::vector<std::byte> header;  // MultiDataHeader, entries appended
    std::vector<DataPiece> pieces;
    std::vector<uint64_t> pins;
  };
  // Checks `pinned` against the key, namespace and capacity asked for: kOk, or the status to
  // answer (the pin is then released).
  StatusCode CheckServed(const BlockKey& key, const NamespaceId& ns, uint64_t capacity,
                         const PinnedBlock& pinned);
  // CheckServed, and on a refusal: unpins `pinned` and answers block `index` of request `rid`
  // with the refusal. True when refused.
  bool RefuseUnserved(ConnId conn, uint64_t rid, uint32_t index, const BlockKey& key,
                      const NamespaceId& ns, uint64_t capacity, const PinnedBlock& pinned);
  void SendBatch(ConnId conn, Batch& batch);

  // Answers block `index` of request `rid` with `pinned` (or its error): checks it against the
  // key, namespace and capacity asked for, then sends it (pull_server.cc).
  void ServeBlock(ConnId conn, uint64_t rid, uint32_t index, const BlockKey& key,
                  const NamespaceId& ns, uint64_t capacity, Result<PinnedBlock> pinned);

  // Deferred blocks (BlockSource::PinLater) come back on another thread and are posted to the
  // progress thread through this gate; the destructor closes it before the engine stops, after
  // which a late block is unpinned at once instead.
  struct DeferGate {
    std::mutex mu;
    Impl* impl = nullptr;  // GUARDED_BY(mu); nullptr once the transport shuts down
  };
  std::shared_ptr<DeferGate> defer_gate = std::make_shared<DeferGate>();

  // ---- client helpers (run on the progress thread) ----
  void StartSession(const std::string& peer, std::vector<std::byte> address,
                    std::shared_ptr<std::promise<Status>> waiter);

  // Runs `fn` on the progress thread and waits for its value.
  template <typename T, typename Fn>
  T RunSync(Fn fn) {
    auto promise = std::make_shared<std::promise<T>>();
    auto future = promise->get_future();
    engine->Post([promise, fn = std::move(fn)]() mutable { promise->set_value(fn()); });
    return future.get();
  }

  Result<wire::Message> Call(const std::string& peer, wire::Message m, uint64_t id);
};

}  // namespace strata::transport
