// The sidecar daemon's socket server (`strata serve`): accepts engine clients on a Unix domain
// socket, hands each the host pool's memfd, and answers their requests through a RequestHandler.
//
// One thread per client session (engines open few, long-lived connections; requests are control
// only, so a session thread is idle most of the time). A session that sends a malformed message
// gets an error reply; one that sends an oversized length, a wrong protocol version, or keeps
// sending garbage is disconnected. Whatever a session reserved or pinned is released when it ends,
// however it ends.
//
// Thread-safety: Start/Stop from one thread; sessions run on their own threads.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "daemon/request_handler.h"
#include "ipc/unix_socket.h"
#include "node/node.h"

namespace strata {

struct DaemonOptions {
  // Path of the Unix domain socket. Default: ipc::DefaultSocketPath().
  std::string socket_path;
  // Permission bits of the socket file. Default: 0600 (only the daemon's user may connect).
  mode_t socket_mode = 0600;
  // Sessions served at once; further clients are refused with ResourceExhausted. Default: 256.
  uint32_t max_clients = 256;
};

class Daemon {
 public:
  // Listens on options.socket_path and starts accepting. REQUIRES: node outlives the daemon.
  static Result<std::unique_ptr<Daemon>> Start(Node* node, const DaemonOptions& options);
  ~Daemon();

  // Stops accepting, disconnects every session and waits for their threads. Idempotent.
  void Stop();

  const std::string& socket_path() const { return options_.socket_path; }
  size_t active_sessions();
  uint64_t sessions_served() const { return next_owner_.load() - 1; }

 private:
  struct Session;

  Daemon(Node* node, DaemonOptions options, ipc::UnixListener listener);
  void AcceptLoop();
  void Serve(Session* session);
  void ReapFinished();

  Node* node_;
  DaemonOptions options_;
  RequestHandler handler_;
  ipc::UnixListener listener_;
  std::thread accept_thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> next_owner_{1};

  std::mutex mu_;
  std::map<uint64_t, std::unique_ptr<Session>> sessions_;  // GUARDED_BY(mu_)
};

}  // namespace strata
