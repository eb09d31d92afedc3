// The sidecar daemon's socket server (`strata serve`): accepts engine clients on a Unix domain
// socket, hands each the host pool's memfd, and answers their requests through a RequestHandler.
//
// One thread per client session (engines open few, long-lived connections; requests are control
// only, so a session thread is idle most of the time). A session that sends a malformed message
// gets an error reply; one that sends an oversized length, a wrong protocol version, or keeps
// sending garbage is disconnected. Whatever a session reserved or pinned is released when it ends,
// however it ends.
//
// Trust and bounds (docs/operations.md, "Security"): the socket's directory is created 0700 (0750
// with socket_group); each connecting process's credentials (SO_PEERCRED) must match the allow
// list, or it is refused with a logged reason. Per client: at most max_clients_per_uid sessions
// per uid, disconnected after idle_timeout_ms without a request or message_timeout_ms inside one
// message; message bodies are allocated as they arrive and all sessions together hold at most
// max_buffered_bytes of them.
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
#include <vector>

#include "daemon/request_handler.h"
#include "daemon/staging_memory.h"
#include "ipc/unix_socket.h"
#include "node/node.h"

namespace strata {

struct DaemonOptions {
  // Path of the Unix domain socket; its directory is created (0700, or 0750 with socket_group)
  // and must not be writable by others. Default: ipc::DefaultSocketPath().
  std::string socket_path;
  // Permission bits of the socket file. Default: 0600 (only the daemon's user may connect);
  // 0660 when socket_group is set and this is left at 0600.
  mode_t socket_mode = 0600;
  // A group (name or number) whose members may reach the socket: its directory becomes 0750 and
  // the socket 0660, both of this group, and the group joins allowed_gids. Default: "" (none).
  std::string socket_group;
  // Users and groups allowed to connect besides the daemon's own user and root; a client matches
  // a group by its primary or a supplementary group. Others are refused and logged. Default: none.
  std::vector<uid_t> allowed_uids;
  std::vector<gid_t> allowed_gids;
  // Users who may Clear every namespace and read node-wide Stats, besides root and the daemon's
  // own user. Default: none.
  std::vector<uid_t> admin_uids;
  // Sessions served at once; further clients are refused with ResourceExhausted. Default: 256.
  uint32_t max_clients = 256;
  // Largest staging memfd a client may hand over (its stores are written there, then copied into
  // the pool by the daemon; docs/data-plane.md). Default: 4 GiB.
  uint64_t max_staging_bytes = uint64_t{4} << 30;
  // Most bytes of engine KV cache one session may share with the daemon (ShareKvRequest: memfds
  // it maps read-only, populated; their page tables are the daemon's, ~2 MiB per GiB of 4 KiB
  // pages; docs/data-plane.md). Default: 1 TiB.
  uint64_t max_shared_kv_bytes = uint64_t{1} << 40;
  // Sessions one uid may hold at once; further ones are refused. Default: 64.
  uint32_t max_clients_per_uid = 64;
  // A session that starts no request for this long is disconnected (releasing its pins and
  // reservations). 0: never. Default: 600000 (10 min).
  uint32_t idle_timeout_ms = 600000;
  // Longest time from a message's first byte to its last before the session is dropped. 0: no
  // limit. Default: 30000.
  uint32_t message_timeout_ms = 30000;
  // Bytes of message bodies all sessions together may hold while receiving; a session whose next
  // bytes do not fit is dropped. Default: 64 MiB (8 of the largest messages at once).
  size_t max_buffered_bytes = size_t{64} << 20;
  // Longest pin a client may ask for (RequestHandlerOptions::max_pin_ms). Default: 60000.
  uint32_t max_pin_ms = 60000;
  // Clients hash every block they load against its checksum, which guards only against faults
  // of the daemon and of memory: the daemon verified each block before it published it, clients
  // map the pool read-only, and a load holds a pin or checks the load index's seqlock
  // (RequestHandlerOptions::verify_loads; docs/data-plane.md). Default: false.
  bool verify_loads = false;
  // Private tenants (docs/data-plane.md, "Tenants"; docs/operations.md, "Security"): a namespace
  // whose tenant_salt is one of these may be opened only by the users and groups listed with it
  // (and root and the daemon's own user); its blocks live in slabs of their own, which no other
  // client can map. Every other salt belongs to the shared tenant, open to every client allowed
  // to connect. Tenant i + 1 is tenants[i]; the node must be opened with tenants.size() + 1
  // tenants (NodeOptions::tenants). Default: none (one shared tenant).
  struct Tenant {
    std::string salt;
    std::vector<uid_t> uids;
    std::vector<gid_t> gids;
  };
  std::vector<Tenant> tenants;
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
  // Connections refused (credentials, per-uid cap, max_clients) since Start.
  uint64_t refused() const { return refused_.load(); }

 private:
  struct Session;

  Daemon(Node* node, DaemonOptions options, ipc::UnixListener listener);
  void AcceptLoop();
  // Why the peer may not connect, or OK.
  Status Admit(const ipc::PeerCredentials& peer) const;
  bool IsAdmin(uid_t uid) const;
  // Caller::tenants for `peer`: empty (every tenant) for root and the daemon's own user.
  std::vector<uint8_t> AllowedTenants(const ipc::PeerCredentials& peer) const;
  void Serve(Session* session);
  void ReapFinished();

  Node* node_;
  DaemonOptions options_;
  RequestHandler handler_;
  ipc::UnixListener listener_;
  std::thread accept_thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> next_owner_{1};
  std::atomic<uint64_t> refused_{0};
  const uid_t self_uid_;
  ipc::ByteBudget receive_budget_;

  std::mutex mu_;
  std::map<uint64_t, std::unique_ptr<Session>> sessions_;  // GUARDED_BY(mu_)
};

}  // namespace strata
