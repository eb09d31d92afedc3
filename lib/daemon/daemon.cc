#include "daemon/daemon.h"

#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <variant>
#include <vector>

namespace strata {

struct Daemon::Session {
  uint64_t owner = 0;
  ipc::UnixConnection conn;
  std::thread thread;
  std::atomic<bool> done{false};

  explicit Session(ipc::UnixConnection c) : conn(std::move(c)) {}
};

namespace {

// Consecutive malformed messages after which a session is dropped.
constexpr int kMaxConsecutiveMalformed = 8;

void Log(const std::string& line) { std::cerr << "strata serve: " << line << std::endl; }

}  // namespace

Result<std::unique_ptr<Daemon>> Daemon::Start(Node* node, const DaemonOptions& options) {
  DaemonOptions opts = options;
  if (opts.socket_path.empty()) opts.socket_path = ipc::DefaultSocketPath();
  if (opts.max_clients == 0) return Status::InvalidArgument("max_clients must be > 0");
  STRATA_ASSIGN_OR_RETURN(ipc::UnixListener listener,
                          ipc::UnixListener::Listen(opts.socket_path, opts.socket_mode));
  std::unique_ptr<Daemon> d(new Daemon(node, std::move(opts), std::move(listener)));
  d->accept_thread_ = std::thread([raw = d.get()] { raw->AcceptLoop(); });
  return d;
}

Daemon::Daemon(Node* node, DaemonOptions options, ipc::UnixListener listener)
    : node_(node),
      options_(std::move(options)),
      handler_(node),
      listener_(std::move(listener)) {}

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

void Daemon::AcceptLoop() {
  while (!stopping_.load()) {
    auto conn = listener_.Accept();
    if (!conn.ok()) {
      if (!stopping_.load()) Log("accept failed: " + conn.status().ToString());
      if (conn.status().code() == StatusCode::kAborted) return;
      continue;
    }
    ReapFinished();
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_.load()) return;
    if (sessions_.size() >= options_.max_clients) {
      ipc::Response refuse;
      refuse.status = Status::ResourceExhausted("daemon serves its maximum of " +
                                                std::to_string(options_.max_clients) + " clients");
      (void)conn->Send(ipc::EncodeResponse(refuse));
      continue;  // the connection closes as it goes out of scope
    }
    auto session = std::make_unique<Session>(std::move(conn).value());
    session->owner = next_owner_.fetch_add(1);
    Session* raw = session.get();
    sessions_[raw->owner] = std::move(session);
    raw->thread = std::thread([this, raw] { Serve(raw); });
  }
}

void Daemon::Serve(Session* session) {
  bool hello_done = false;
  int malformed = 0;
  std::string body;
  while (!stopping_.load()) {
    Status st = session->conn.Receive(&body);
    if (!st.ok()) {
      if (st.IsInvalidArgument()) {  // oversized length: the stream cannot be resynchronised
        ipc::Response r;
        r.status = st;
        (void)session->conn.Send(ipc::EncodeResponse(r));
        Log("session " + std::to_string(session->owner) + " dropped: " + st.ToString());
      }
      break;
    }
    auto request = ipc::DecodeRequest(std::as_bytes(std::span<const char>(body)));
    ipc::Response response;
    int pass_fd = -1;
    if (!request.ok()) {
      response.status = request.status();
      if (++malformed >= kMaxConsecutiveMalformed) {
        (void)session->conn.Send(ipc::EncodeResponse(response));
        Log("session " + std::to_string(session->owner) + " dropped after " +
            std::to_string(malformed) + " malformed messages");
        break;
      }
    } else if (const auto* hello = std::get_if<ipc::Hello>(&request->body)) {
      malformed = 0;
      response = handler_.HandleHello(*request, *hello);
      if (response.status.ok()) {
        hello_done = true;
        pass_fd = node_->pool_fd();
      } else {
        (void)session->conn.Send(ipc::EncodeResponse(response));
        break;  // wrong protocol version: nothing else it sends can be understood
      }
    } else if (!hello_done) {
      response.id = request->id;
      response.status = Status::InvalidArgument("the first request on a connection must be Hello");
    } else {
      malformed = 0;
      response = handler_.Handle(session->owner, *request);
    }
    if (!session->conn.Send(ipc::EncodeResponse(response), pass_fd).ok()) break;
  }
  session->conn.Shutdown();  // the peer sees the close now, not when the session is reaped
  node_->ReleaseOwner(session->owner);
  session->done.store(true);
}

}  // namespace strata
