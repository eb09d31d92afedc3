// PeerTransport: its core (peer_transport_impl.h lists the other files).
#include "transport/peer_transport.h"

#include <sched.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "strata/block_format.h"
#include "transport/peer_transport_impl.h"

namespace strata::transport {

int AutoProgressSpinRounds() {
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  const int n = ::sched_getaffinity(0, sizeof(cpus), &cpus) == 0 ? CPU_COUNT(&cpus) : 1;
  return n >= 4 ? 2000 : 0;
}

void PeerTransport::Impl::NoteUnreachable(const std::string& peer,
                                          const std::vector<std::byte>& address,
                                          const Status& why) {
  ConnectBackoff& b = connect_backoff[peer];
  if (b.address != address) b = ConnectBackoff{address};
  b.delay = b.delay.count() == 0 ? kFirstConnectBackoff : std::min(2 * b.delay, kMaxConnectBackoff);
  b.next = Clock::now() + b.delay;
  b.last = why;
  prof.connect_backoffs.fetch_add(1, std::memory_order_relaxed);
}

// Fails everything that rides on `conn` and, when `conn` belongs to a session, on the
// session's other endpoint; force-closes `conn` when `close`, the other endpoint always.
void PeerTransport::Impl::FailConn(ConnId conn, const Status& st, bool close) {
  ConnId other = 0;
  if (auto it = client_conns.find(conn); it != client_conns.end()) {
    const std::string key = it->second;
    client_conns.erase(it);
    auto s = sessions.find(key);
    if (s != sessions.end() && (s->second.conn == conn || s->second.data_conn == conn)) {
      other = s->second.conn == conn ? s->second.data_conn : s->second.conn;
      if (other != 0) client_conns.erase(other);
      if (!s->second.ready) NoteUnreachable(key, s->second.address, st);
      for (auto& w : s->second.waiters) w->set_value(st);
      for (auto& w : s->second.raw_waiters) w->set_value(st);
      handshakes.erase(s->second.handshake_id);
      UnpublishReady(s->first);
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
    // Ends now; places UCX may still write are held until it reports them (MaybeFinish).
    MaybeFinish(p);
  }
  if (close) engine->Close(conn, /*force=*/true);
  // The data endpoint (no peer error handling) is closed by flushing it (UcxEngine::CloseEp).
  // The receives UCX tracks on it end with an error once its peer's sockets close (a dead
  // holder); those of a living peer wait for its bytes and stay held (PullResult::held).
  if (other != 0) engine->Close(other, /*force=*/true);
}

void PeerTransport::Impl::OnTick() {
  const auto now = Clock::now();
  while (!quarantined_receives.empty() && quarantined_receives.front().due <= now) {
    FailedReceive f = std::move(quarantined_receives.front());
    quarantined_receives.pop_front();
    ReceiveReported(f.pull, f.cookie);
  }
  while (!served_pins.empty() &&
         (served_pins.front()->released || served_pins.front()->deadline < now)) {
    if (!served_pins.front()->released && served_pins.front()->mapped)
      prof.mapped_expired.fetch_add(1, std::memory_order_relaxed);
    ReleasePin(*served_pins.front());
    served_pins.pop_front();
  }
  std::erase_if(mapped_pins, [&](const auto& e) { return e.second.deadline < now; });
  std::vector<ConnId> expired;
  for (auto& [peer, s] : sessions)
    if (!s.ready && now > s.deadline) expired.push_back(s.conn);
  for (auto& [id, r] : rpcs)
    if (now > r.deadline) expired.push_back(r.conn);
  std::vector<std::string> quiet;  // peers with a pull that saw no data for kProbeAfter
  for (auto& [id, p] : pulls) {
    if (!p->posted || p->finished) continue;
    if (now > p->deadline && p->failure.ok()) expired.push_back(p->conn);
    if (p->failure.ok() && now - p->last_data > kProbeAfter) quiet.push_back(p->peer);
  }
  for (ConnId c : expired)
    FailConn(c, Status::TimedOut("peer did not answer within " +
                                 std::to_string(options.request_timeout.count()) + " ms"),
             /*close=*/true);
  for (const std::string& peer : quiet) {
    auto it = sessions.find(peer);
    if (it == sessions.end()) continue;
    Session& s = it->second;
    if (!s.ready || s.data_conn == 0 || now - s.probed < kProbeAfter) continue;
    s.probed = now;
    // A failed send fails the control endpoint (UCX peer error mode): on_conn_error then fails
    // the session, its pulls included.
    const uint64_t id = next_request.fetch_add(1);
    rpcs[id] = Rpc{s.conn, now + options.request_timeout,
                   std::make_shared<std::promise<Result<wire::Message>>>(), /*probe=*/true};
    prof.probes.fetch_add(1, std::memory_order_relaxed);
    SendMessage(s.conn, wire::LookupRequest{id, {}, s.token});
  }
  std::vector<std::shared_ptr<PullOp::State>> all;
  for (auto& [id, p] : pulls) all.push_back(p);
  for (auto& p : all) MaybeFinish(p);
}

// ---- control messages ----
// Requests go to the server side, responses to the client side. The connection alone cannot
// tell: when two nodes connect to each other, UCX may deliver a peer's requests on the endpoint
// we created towards it.
void PeerTransport::Impl::OnControl(ConnId conn, std::span<const std::byte> bytes) {
  bool response = false;
  if (bytes.size() >= wire::kFrameHeaderSize) {
    const auto type = static_cast<wire::MessageType>(static_cast<uint16_t>(bytes[6]) |
                                                     (static_cast<uint16_t>(bytes[7]) << 8));
    response = type == wire::MessageType::kHelloAck || type == wire::MessageType::kAuthOk ||
               type == wire::MessageType::kError ||
               type == wire::MessageType::kLookupResponse ||
               type == wire::MessageType::kAnnounceAck ||
               type == wire::MessageType::kMappedBlocks;
  }
  if (response && client_conns.count(conn)) {
    OnClientControl(conn, bytes);
  } else {
    OnServerControl(conn, bytes);
  }
}

PeerTransport::PeerTransport(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

PeerTransport::~PeerTransport() {
  {  // deferred blocks that become ready from now on are unpinned, not posted
    std::lock_guard<std::mutex> lock(impl_->defer_gate->mu);
    impl_->defer_gate->impl = nullptr;
  }
  // Join the progress thread while impl_->engine is still set: its last round may run handlers
  // (an endpoint failing) that reach the engine; reset() would null the pointer first (a
  // SIGSEGV seen in CI). Everything below is single-threaded.
  impl_->engine->Stop();
  impl_->engine.reset();
  // The UCX worker is destroyed: nothing writes the held places any more.
  for (auto& [id, p] : impl_->held_pulls)
    for (size_t i = 0; i < p->in_ucx.size(); ++i) {
      p->in_ucx[i] = 0;
      impl_->MaybeRelease(*p, i);
    }
  impl_->held_pulls.clear();
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
    std::fill(p->in_ucx.begin(), p->in_ucx.end(), 0);  // the worker is gone (above)
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
                              std::vector<DataPiece>* pieces,
                              uint64_t* k) { raw->OnData(c, h, n, d, pieces, k); };
  raw->discard.resize(raw->options.pull_coalesce_bytes);
  eo.handlers.on_data_done = [raw](ConnId c, uint64_t k, const Status& s) {
    raw->OnDataDone(c, k, s);
  };
  eo.handlers.on_conn_error = [raw](ConnId c, const Status& s) { raw->FailConn(c, s, false); };
  eo.handlers.on_tick = [raw] { raw->OnTick(); };
  STRATA_ASSIGN_OR_RETURN(impl->engine, UcxEngine::Open(std::move(eo)));
  impl->defer_gate->impl = raw;
  if (raw->options.mapped_pulls && raw->options.block_source != nullptr)
    raw->same_host_offer = LocalSameHost();
  return std::unique_ptr<PeerTransport>(new PeerTransport(std::move(impl)));
}

const std::string& PeerTransport::node_id() const { return impl_->options.node_id; }

const std::vector<std::byte>& PeerTransport::worker_address() const {
  return impl_->engine->worker_address();
}

const std::string& PeerTransport::tls() const { return impl_->engine->tls(); }

Status PeerTransport::ReregisterUnit(const void* unit_base) {
  return impl_->engine->ReregisterUnit(unit_base);
}

uint64_t PeerTransport::flushing_closes() const { return impl_->engine->flushing_closes(); }

uint64_t PeerTransport::units_reregistered() const {
  return impl_->engine->units_reregistered();
}

bool PeerTransport::MapsPoolOf(const std::string& peer) const {
  std::lock_guard<std::mutex> lock(impl_->ready_mu);
  auto it = impl_->ready_sessions.find(peer);
  return it != impl_->ready_sessions.end() && it->second.mapping != nullptr &&
         !it->second.mapping->off();
}

TransferProfile PeerTransport::Profile() const {
  const Impl::ProfileCounters& c = impl_->prof;
  auto secs = [](const std::atomic<uint64_t>& ns) { return double(ns.load()) / 1e9; };
  TransferProfile p;
  p.pull_requests = c.pull_requests.load();
  p.pull_blocks = c.pull_blocks.load();
  p.max_pulls_in_flight = c.max_pulls_in_flight.load();
  p.served_requests = c.served_requests.load();
  p.served_blocks = c.served_blocks.load();
  p.served_messages = c.served_messages.load();
  p.served_contiguous = c.served_contiguous.load();
  p.landed_multi = c.landed_multi.load();
  p.landed_contiguous = c.landed_contiguous.load();
  p.probes = c.probes.load();
  p.probes_answered = c.probes_answered.load();
  p.serve_pin_s = secs(c.serve_pin_ns);
  p.serve_request_s = secs(c.serve_request_ns);
  p.send_s = secs(c.send_ns);
  p.max_sends_in_flight = c.max_sends_in_flight.load();
  p.mapped_sessions = c.mapped_sessions.load();
  p.mapped_fallbacks = c.mapped_fallbacks.load();
  p.mapped_blocks = c.mapped_blocks.load();
  p.mapped_bytes = c.mapped_bytes.load();
  p.mapped_failures = c.mapped_failures.load();
  p.mapped_copy_s = secs(c.mapped_copy_ns);
  p.served_mapped = c.served_mapped.load();
  p.mapped_released = c.mapped_released.load();
  p.mapped_expired = c.mapped_expired.load();
  p.held_blocks = c.held_blocks.load();
  p.held_released = c.held_released.load();
  p.failed_receives = c.failed_receives.load();
  p.connect_backoffs = c.connect_backoffs.load();
  {
    std::lock_guard<std::mutex> lock(impl_->ready_mu);
    for (const auto& [peer, r] : impl_->ready_sessions)
      if (r.mapping) p.mapped_slabs += r.mapping->slabs_mapped();
  }
  return p;
}

Status PeerTransport::Connect(const std::string& peer, std::span<const std::byte> address) {
  {
    std::lock_guard<std::mutex> lock(impl_->ready_mu);
    auto it = impl_->ready_sessions.find(peer);
    if (it != impl_->ready_sessions.end() &&
        std::equal(it->second.address.begin(), it->second.address.end(), address.begin(),
                   address.end()))
      return Status::OK();
  }
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

}  // namespace strata::transport
