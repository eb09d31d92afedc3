// Unix domain stream sockets carrying length-prefixed messages (ipc_protocol.h), with optional
// file-descriptor passing (SCM_RIGHTS) — how the daemon hands its host pool's memfd to a client.
//
// Thread-safety: a UnixConnection may be used by one sending and one receiving thread at a time;
// UnixListener::Accept may be called from one thread while another calls Shutdown.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <string>
#include <string_view>

#include "strata/result.h"
#include "strata/status.h"

namespace strata::ipc {

// Where daemon and clients meet unless told otherwise: $STRATA_SOCKET, else
// $XDG_RUNTIME_DIR/strata.sock, else /tmp/strata-<uid>.sock.
std::string DefaultSocketPath();

class UnixConnection {
 public:
  // Connects to the daemon socket at `path`. Unavailable when nobody listens there.
  static Result<UnixConnection> Connect(const std::string& path);

  explicit UnixConnection(int fd) : fd_(fd) {}
  UnixConnection(UnixConnection&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  UnixConnection& operator=(UnixConnection&& other) noexcept;
  UnixConnection(const UnixConnection&) = delete;
  UnixConnection& operator=(const UnixConnection&) = delete;
  ~UnixConnection();

  // Sends one message (4-byte LE length + body); with pass_fd >= 0 the descriptor travels with it.
  Status Send(std::string_view body, int pass_fd = -1);

  // Receives one message into `body`. A descriptor that arrives with it is stored in
  // *received_fd (the caller owns it) or closed when received_fd is null.
  // Unavailable when the peer closed the connection; InvalidArgument on a length above
  // kMaxMessageBytes (the caller should drop the connection); IOError on socket errors.
  Status Receive(std::string* body, int* received_fd = nullptr);

  // Sets a receive timeout (0: none); Receive then fails with TimedOut.
  Status SetReceiveTimeout(int timeout_ms);

  // Wakes a thread blocked in Receive (which then returns Unavailable).
  void Shutdown();

  // Process id of the peer (SO_PEERCRED), or -1.
  pid_t PeerPid() const;
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

class UnixListener {
 public:
  // Binds and listens at `path` with permission `mode` (e.g. 0600). An existing socket file at
  // `path` is replaced only when no daemon answers on it (AlreadyExists otherwise).
  static Result<UnixListener> Listen(const std::string& path, mode_t mode);

  UnixListener(UnixListener&& other) noexcept
      : fd_(other.fd_.exchange(-1)), path_(std::move(other.path_)) {}
  UnixListener(const UnixListener&) = delete;
  UnixListener& operator=(const UnixListener&) = delete;
  ~UnixListener();

  // Blocks for the next client. Aborted after Shutdown().
  Result<UnixConnection> Accept();
  // Stops Accept (from any thread) and removes the socket file.
  void Shutdown();
  const std::string& path() const { return path_; }

 private:
  UnixListener(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  std::atomic<int> fd_{-1};  // -1 after Shutdown; read by Accept on another thread
  std::string path_;
};

}  // namespace strata::ipc
