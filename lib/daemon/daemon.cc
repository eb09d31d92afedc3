#include "daemon/daemon.h"

#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <variant>
#include <vector>

#include "core/cross_memory.h"

namespace strata {

struct Daemon::Session {
  uint64_t owner = 0;
  ipc::PeerCredentials peer;
  Caller caller;
  StagingMemory staging;  // the client's staging memfd, mapped read-only at its Hello
  SharedKvSet shared_kv;  // the engine KV caches it shared (ShareKvRequest), mapped read-only
  ipc::UnixConnection conn;
  std::thread thread;
  std::atomic<bool> done{false};

  // A pidfd of the peer (SO_PEERPIDFD) once it asked for cross-memory stores; -1: none.
  int peer_pidfd = -1;

  Session(ipc::UnixConnection c, ipc::PeerCredentials p) : peer(std::move(p)), conn(std::move(c)) {}
  ~Session() {
    if (peer_pidfd >= 0) ::close(peer_pidfd);
  }
};

namespace {

// Consecutive malformed messages after which a session is dropped.
constexpr int kMaxConsecutiveMalformed = 8;
// A session keeps a receive buffer up to this size between messages; a larger one is freed.
constexpr size_t kKeptBodyBytes = 64 * 1024;

void Log(const std::string& line) { std::cerr << "strata serve: " << line << std::endl; }

std::string Describe(const ipc::PeerCredentials& p) {
  return "pid " + std::to_string(p.pid) + " uid " + std::to_string(p.uid) + " gid " +
         std::to_string(p.gid);
}

// A group by name or number.
Result<gid_t> ResolveGroup(const std::string& name) {
  gid_t gid = 0;
  auto [ptr, ec] = std::from_chars(name.data(), name.data() + name.size(), gid);
  if (ec == std::errc() && ptr == name.data() + name.size()) return gid;
  std::vector<char> buf(16384);
  group g{};
  group* found = nullptr;
  const int rc = ::getgrnam_r(name.c_str(), &g, buf.data(), buf.size(), &found);
  if (rc != 0 || found == nullptr)
    return Status::InvalidArgument("socket_group: no group named '" + name + "'");
  return found->gr_gid;
}

RequestHandlerOptions HandlerOptions(const DaemonOptions& d) {
  RequestHandlerOptions o;
  o.max_pin_ms = d.max_pin_ms;
  o.verify_loads = d.verify_loads;
  for (const DaemonOptions::Tenant& t : d.tenants) o.private_salts.push_back(t.salt);
  return o;
}

}  // namespace

Result<std::unique_ptr<Daemon>> Daemon::Start(Node* node, const DaemonOptions& options) {
  DaemonOptions opts = options;
  if (opts.socket_path.empty()) opts.socket_path = ipc::DefaultSocketPath();
  if (opts.max_clients == 0) return Status::InvalidArgument("max_clients must be > 0");
  if (opts.max_clients_per_uid == 0)
    return Status::InvalidArgument("max_clients_per_uid must be > 0");
  if (opts.max_buffered_bytes < ipc::kMaxMessageBytes)
    return Status::InvalidArgument("max_buffered_bytes must be at least " +
                                   std::to_string(ipc::kMaxMessageBytes) +
                                   " (one message of the largest size)");
  if (opts.tenants.size() + 1 > 256)
    return Status::InvalidArgument("at most 255 private tenants");
  for (size_t i = 0; i < opts.tenants.size(); ++i) {
    if (opts.tenants[i].salt.empty())
      return Status::InvalidArgument("tenant: the shared tenant (salt '') cannot be private");
    for (size_t j = 0; j < i; ++j)
      if (opts.tenants[j].salt == opts.tenants[i].salt)
        return Status::InvalidArgument("tenant '" + opts.tenants[i].salt + "' is listed twice");
  }
  gid_t group = ipc::kNoGroup;
  if (!opts.socket_group.empty()) {
    STRATA_ASSIGN_OR_RETURN(group, ResolveGroup(opts.socket_group));
    opts.allowed_gids.push_back(group);
    if (opts.socket_mode == 0600) opts.socket_mode = 0660;
  }
  STRATA_RETURN_IF_ERROR(ipc::PrepareSocketDirectory(opts.socket_path, group));
  STRATA_ASSIGN_OR_RETURN(ipc::UnixListener listener,
                          ipc::UnixListener::Listen(opts.socket_path, opts.socket_mode));
  if (group != ipc::kNoGroup && ::chown(opts.socket_path.c_str(), static_cast<uid_t>(-1), group) != 0)
    return Status::IOError("chown '" + opts.socket_path + "' to gid " + std::to_string(group) +
                           ": " + std::strerror(errno));
  std::unique_ptr<Daemon> d(new Daemon(node, std::move(opts), std::move(listener)));
  d->accept_thread_ = std::thread([raw = d.get()] { raw->AcceptLoop(); });
  return d;
}

Daemon::Daemon(Node* node, DaemonOptions options, ipc::UnixListener listener)
    : node_(node),
      options_(std::move(options)),
      handler_(node, HandlerOptions(options_)),
      listener_(std::move(listener)),
      self_uid_(::geteuid()),
      receive_budget_(options_.max_buffered_bytes) {}

Daemon::~Daemon() { Stop(); }

void Daemon::Stop() {
  if (stopping_.exchange(true)) return;
  listener_.Shutdown();
  if (accept_thread_.joinable()) accept_thread_.join();
  std::map<uint64_t, std::unique_ptr<Session>> sessions;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, s] : sessions_) s->conn.Shutdown();
    sessions.swap(sessions_);
  }
  for (auto& [id, s] : sessions)
    if (s->thread.joinable()) s->thread.join();
}

size_t Daemon::active_sessions() {
  std::lock_guard<std::mutex> lock(mu_);
  size_t n = 0;
  for (auto& [id, s] : sessions_) n += s->done.load() ? 0 : 1;
  return n;
}

void Daemon::ReapFinished() {
  std::vector<std::unique_ptr<Session>> finished;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      if (it->second->done.load()) {
        finished.push_back(std::move(it->second));
        it = sessions_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& s : finished) s->thread.join();
}

Status Daemon::Admit(const ipc::PeerCredentials& peer) const {
  if (peer.uid == 0 || peer.uid == self_uid_) return Status::OK();
  const auto& uids = options_.allowed_uids;
  if (std::find(uids.begin(), uids.end(), peer.uid) != uids.end()) return Status::OK();
  for (gid_t g : options_.allowed_gids) {
    if (g == peer.gid) return Status::OK();
    if (std::find(peer.groups.begin(), peer.groups.end(), g) != peer.groups.end())
      return Status::OK();
  }
  return Status::PermissionDenied("uid " + std::to_string(peer.uid) +
                                  " is not allowed to use this daemon (allowed: uid " +
                                  std::to_string(self_uid_) +
                                  ", root, allowed_uids, allowed_gids)");
}

std::vector<uint8_t> Daemon::AllowedTenants(const ipc::PeerCredentials& peer) const {
  if (peer.uid == 0 || peer.uid == self_uid_ || options_.tenants.empty()) return {};
  std::vector<uint8_t> allowed(options_.tenants.size() + 1, 0);
  allowed[0] = 1;  // the shared tenant
  auto in_group = [&](gid_t g) {
    return g == peer.gid || std::find(peer.groups.begin(), peer.groups.end(), g) !=
                                peer.groups.end();
  };
  for (size_t i = 0; i < options_.tenants.size(); ++i) {
    const auto& t = options_.tenants[i];
    if (std::find(t.uids.begin(), t.uids.end(), peer.uid) != t.uids.end() ||
        std::any_of(t.gids.begin(), t.gids.end(), in_group))
      allowed[i + 1] = 1;
  }
  return allowed;
}

bool Daemon::IsAdmin(uid_t uid) const {
  if (uid == 0 || uid == self_uid_) return true;
  const auto& admins = options_.admin_uids;
  return std::find(admins.begin(), admins.end(), uid) != admins.end();
}

void Daemon::AcceptLoop() {
  while (!stopping_.load()) {
    auto conn = listener_.Accept();
    if (!conn.ok()) {
      if (!stopping_.load()) Log("accept failed: " + conn.status().ToString());
      if (conn.status().code() == StatusCode::kAborted) return;
      continue;
    }
    ReapFinished();
    // Refuses the connection with `why` (sent to the peer and logged).
    auto refuse = [&](const Status& why, const std::string& who) {
      refused_.fetch_add(1);
      Log("refused client " + who + ": " + why.ToString());
      ipc::Response r;
      r.status = why;
      (void)conn->Send(ipc::EncodeResponse(r));
    };  // the connection closes as it goes out of scope
    auto peer = conn->Peer();
    if (!peer.ok()) {
      refuse(peer.status(), "(no credentials)");
      continue;
    }
    if (Status admitted = Admit(*peer); !admitted.ok()) {
      refuse(admitted, Describe(*peer));
      continue;
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_.load()) return;
    if (sessions_.size() >= options_.max_clients) {
      refuse(Status::ResourceExhausted("daemon serves its maximum of " +
                                       std::to_string(options_.max_clients) + " clients"),
             Describe(*peer));
      continue;
    }
    size_t same_uid = 0;
    for (const auto& [id, s] : sessions_) same_uid += !s->done.load() && s->peer.uid == peer->uid;
    if (same_uid >= options_.max_clients_per_uid) {
      refuse(Status::ResourceExhausted("uid " + std::to_string(peer->uid) + " already holds " +
                                       std::to_string(same_uid) + " connections (the maximum)"),
             Describe(*peer));
      continue;
    }
    auto session = std::make_unique<Session>(std::move(conn).value(), std::move(peer).value());
    session->owner = next_owner_.fetch_add(1);
    session->caller.admin = IsAdmin(session->peer.uid);
    session->caller.tenants = AllowedTenants(session->peer);
    session->caller.shared_kv = &session->shared_kv;
    Session* raw = session.get();
    sessions_[raw->owner] = std::move(session);
    raw->thread = std::thread([this, raw] { Serve(raw); });
  }
}

void Daemon::Serve(Session* session) {
  bool hello_done = false;
  int malformed = 0;
  std::string body;
  ipc::ByteBudget::Lease lease(&receive_budget_);
  ipc::ReceiveLimits limits;
  limits.idle_timeout_ms = static_cast<int>(std::min<uint32_t>(options_.idle_timeout_ms, 1u << 30));
  limits.message_timeout_ms =
      static_cast<int>(std::min<uint32_t>(options_.message_timeout_ms, 1u << 30));
  limits.lease = &lease;
  const std::string who = "session " + std::to_string(session->owner) + " (" +
                          Describe(session->peer) + ")";
  while (!stopping_.load()) {
    if (body.capacity() > kKeptBodyBytes) std::string().swap(body);
    lease.Reset();
    int received_fd = -1;  // only a Hello (staging memfd) and a ShareKv (KV memfd) carry one
    // A descriptor that came with this message and that nothing consumed (std::exchange'd it
    // away) is closed however this iteration ends.
    struct CloseUnconsumed {
      int* fd;
      ~CloseUnconsumed() {
        if (*fd >= 0) ::close(*fd);
      }
    } close_unconsumed{&received_fd};
    Status st = session->conn.Receive(&body, &received_fd, limits);
    if (!st.ok()) {
      if (st.IsInvalidArgument() || st.code() == StatusCode::kResourceExhausted) {
        // An oversized length cannot be resynchronised; a full budget cannot be waited out.
        ipc::Response r;
        r.status = st;
        (void)session->conn.Send(ipc::EncodeResponse(r));
        Log(who + " dropped: " + st.ToString());
      } else if (st.IsTimedOut() && !stopping_.load()) {
        Log(who + " dropped: " + st.ToString() + " (idle or stalled mid-message)");
      }
      break;
    }
    auto request = ipc::DecodeRequest(std::as_bytes(std::span<const char>(body)));
    const auto* hello = request.ok() ? std::get_if<ipc::Hello>(&request->body) : nullptr;
    const auto* share =
        request.ok() ? std::get_if<ipc::ShareKvRequest>(&request->body) : nullptr;
    const auto* unshare =
        request.ok() ? std::get_if<ipc::UnshareKvRequest>(&request->body) : nullptr;
    const bool fd_wanted = (hello != nullptr && !hello_done) || (share != nullptr && hello_done);
    if (received_fd >= 0 && !fd_wanted) {
      ::close(received_fd);
      received_fd = -1;
    }
    ipc::Response response;
    int pass_fd = -1;
    // A descriptor this iteration opened to send (a slab's), closed once sent.
    struct CloseSent {
      int fd = -1;
      ~CloseSent() {
        if (fd >= 0) ::close(fd);
      }
    } close_sent;
    const auto* map_slab =
        request.ok() ? std::get_if<ipc::MapSlabRequest>(&request->body) : nullptr;
    const auto* map_index =
        request.ok() ? std::get_if<ipc::MapLoadIndexRequest>(&request->body) : nullptr;
    if (!request.ok()) {
      response.status = request.status();
      if (++malformed >= kMaxConsecutiveMalformed) {
        (void)session->conn.Send(ipc::EncodeResponse(response));
        Log(who + " dropped after " + std::to_string(malformed) + " malformed messages");
        break;
      }
    } else if (hello != nullptr) {
      malformed = 0;
      response = handler_.HandleHello(*request, *hello);
      if (response.status.ok() && !hello_done) {
        auto staging = StagingMemory::Map(std::exchange(received_fd, -1), hello->staging_bytes,
                                          options_.max_staging_bytes);
        if (staging.ok()) {
          session->staging = std::move(staging).value();
          session->caller.staging = session->staging.bytes();
          // Cross-memory stores: tried once per session on the probe the client named; refused
          // (another uid without CAP_SYS_PTRACE, Yama, a pid namespace), stores use staging.
          if (hello->cross_memory_probe != 0 && session->peer.pid > 0) {
            auto peer = PeerProcess(session->conn.fd(), session->peer.pid);
            Status probe = peer.status();
            if (peer.ok()) {
              session->peer_pidfd = peer->pidfd;
              probe = ProbeProcessMemory(*peer, hello->cross_memory_probe, 64);
            }
            if (probe.ok()) {
              session->caller.cross_memory_pid = session->peer.pid;
              session->caller.cross_memory_pidfd = session->peer_pidfd;
              std::get<ipc::HelloReply>(response.body).cross_memory = true;
            } else {
              Log(who + ": cross-memory stores refused, using staging: " + probe.ToString());
            }
          }
        } else {
          response.body = std::monostate{};
          response.status = staging.status().WithContext("Hello");
        }
      }
      if (response.status.ok()) {
        hello_done = true;
      } else {
        (void)session->conn.Send(ipc::EncodeResponse(response));
        break;  // wrong protocol version: nothing else it sends can be understood
      }
    } else if (!hello_done) {
      response.id = request->id;
      response.status = Status::InvalidArgument("the first request on a connection must be Hello");
    } else if (map_slab != nullptr) {
      malformed = 0;
      response.id = request->id;
      auto slab = handler_.MapSlab(*map_slab, session->caller);
      if (!slab.ok()) {
        response.status = slab.status();
        Log(who + ": " + slab.status().ToString());
      } else {
        response.body = ipc::MapSlabReply{slab->generation};
        pass_fd = close_sent.fd = slab->fd;
      }
    } else if (map_index != nullptr) {
      malformed = 0;
      response.id = request->id;
      auto seg = handler_.MapLoadIndex(*map_index, session->caller);
      if (!seg.ok()) {
        response.status = seg.status();
        Log(who + ": " + seg.status().ToString());
      } else {
        response.body = ipc::MapLoadIndexReply{seg->second, seg->first.bytes};
        pass_fd = close_sent.fd = seg->first.fd;
      }
    } else if (share != nullptr) {
      // The engine's KV cache on a sealed memfd: mapped read-only here, once (docs/data-plane.md,
      // "Engine KV through the daemon's own mapping").
      malformed = 0;
      response.id = request->id;
      auto mapped = SharedKv::Map(std::exchange(received_fd, -1), *share,
                                  options_.max_shared_kv_bytes);
      Result<uint64_t> id = mapped.status();
      if (mapped.ok()) id = session->shared_kv.Add(std::move(mapped).value(),
                                                   options_.max_shared_kv_bytes);
      if (!id.ok()) {
        response.status = id.status();
        Log(who + ": " + id.status().ToString());
      } else {
        response.body = ipc::ShareKvReply{*id};
      }
    } else if (unshare != nullptr) {
      malformed = 0;
      response.id = request->id;
      response.status = session->shared_kv.Remove(unshare->id);
      if (response.status.ok()) response.body = ipc::UnshareKvReply{};
    } else if (std::holds_alternative<ipc::AccessNotice>(request->body)) {
      malformed = 0;
      (void)handler_.Handle(session->owner, *request, session->caller);
      continue;  // a notice has no reply (Channel::Notify)
    } else {
      malformed = 0;
      response = handler_.Handle(session->owner, *request, session->caller);
    }
    if (!session->conn.Send(ipc::EncodeResponse(response), pass_fd).ok()) break;
  }
  session->conn.Shutdown();  // the peer sees the close now, not when the session is reaped
  node_->ReleaseOwner(session->owner);
  session->done.store(true);
}

}  // namespace strata
