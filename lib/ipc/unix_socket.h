// Unix domain stream sockets carrying length-prefixed messages (ipc_protocol.h), with optional
// file-descriptor passing (SCM_RIGHTS) — how the daemon hands its host pool's memfd to a client.
//
// Trust (docs/operations.md, "Security"): the daemon's socket lives in a directory that only its
// user (or a configured group) can enter, the daemon checks each client's credentials
// (PeerCredentials, SO_PEERCRED), and a client checks that the socket it is about to trust belongs
// to its own user or root (CheckDaemonSocketOwner).
//
// Resources: Receive allocates a message body only as its bytes arrive, charging them to an
// optional ByteBudget shared by all connections, and can bound how long a message may take to
// start and to complete (ReceiveLimits). Every descriptor that arrives is closed unless the caller
// asked for it.
//
// Thread-safety: a UnixConnection may be used by one sending and one receiving thread at a time;
// UnixListener::Accept may be called from one thread while another calls Shutdown. ByteBudget is
// thread-safe; a ByteBudget::Lease belongs to one thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "strata/result.h"
#include "strata/status.h"

namespace strata::ipc {

// Where daemon and clients meet unless told otherwise: $STRATA_SOCKET, else
// $XDG_RUNTIME_DIR/strata/strata.sock, else /tmp/strata-<uid>/strata.sock. The daemon creates
// the directory (PrepareSocketDirectory), never a predictable file in a shared directory.
std::string DefaultSocketPath();

// Daemon side, before Listen: creates the directories leading to `socket_path` that are missing
// (mkdir -p) with mode 0700, or 0750 and group `group` when group != kNoGroup, and checks the
// directory that will hold the socket: a directory (not a symbolic link), owned by this process's
// user or root, and not writable by group or others unless sticky (as /tmp). PermissionDenied
// names the directory and what is wrong with it; IOError when a directory cannot be created.
inline constexpr gid_t kNoGroup = static_cast<gid_t>(-1);
Status PrepareSocketDirectory(const std::string& socket_path, gid_t group = kNoGroup);

// Client side, before trusting a daemon: `path` must be a socket owned by this process's user, by
// root or by one of `trusted_uids` (the daemon's service user, e.g. `strata` under systemd), in a
// directory that others cannot swap it out of (owned by one of the same, not writable by group or
// others unless sticky). PermissionDenied says which check failed and how to trust the owner;
// Unavailable when nothing is at `path`.
Status CheckDaemonSocketOwner(const std::string& path, std::span<const uid_t> trusted_uids = {});

// The uids that STRATA_DAEMON_USER names (comma-separated user names or numeric uids: the users a
// client trusts to run its daemon, besides itself and root), plus `configured`. InvalidArgument
// names an unknown user.
Result<std::vector<uid_t>> TrustedDaemonUids(std::span<const uint32_t> configured);

// The peer of a connected socket, as the kernel recorded it at connect time (SO_PEERCRED), and
// its supplementary groups where the kernel reports them (SO_PEERGROUPS, Linux >= 4.13).
struct PeerCredentials {
  pid_t pid = -1;
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
  std::vector<gid_t> groups;
};

// A byte budget shared by many holders (e.g. all sessions' receive buffers). Thread-safe.
class ByteBudget {
 public:
  explicit ByteBudget(size_t limit) : limit_(limit) {}
  ByteBudget(const ByteBudget&) = delete;
  ByteBudget& operator=(const ByteBudget&) = delete;

  // The bytes one holder has taken from the budget; all returned by Reset or the destructor.
  class Lease {
   public:
    explicit Lease(ByteBudget* budget) : budget_(budget) {}
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { Reset(); }
    // Takes `n` more bytes; false (nothing taken) when the budget cannot give them.
    bool Grow(size_t n);
    void Reset();
    size_t bytes() const { return bytes_; }

   private:
    ByteBudget* budget_;
    size_t bytes_ = 0;
  };

  size_t limit() const { return limit_; }
  size_t used() const { return used_.load(std::memory_order_relaxed); }

 private:
  const size_t limit_;
  std::atomic<size_t> used_{0};
};

// Bounds on one Receive. Defaults: none (only SetReceiveTimeout applies).
struct ReceiveLimits {
  // Longest wait for the first byte of a message; TimedOut after it. 0: no limit.
  int idle_timeout_ms = 0;
  // Longest time from a message's first byte to its last; TimedOut after it. 0: no limit.
  int message_timeout_ms = 0;
  // Charged with the body's buffer as it grows; ResourceExhausted when it cannot be. The caller
  // resets the lease once it is done with the body. Null: no budget.
  ByteBudget::Lease* lease = nullptr;
};

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

  // Receives one message into `body`. The first descriptor that arrives with it is stored in
  // *received_fd (the caller owns it); every other one, and that one when received_fd is null,
  // is closed. The body's buffer grows only as its bytes arrive (not to the announced length).
  // Unavailable when the peer closed the connection; InvalidArgument on a length above
  // kMaxMessageBytes (the caller should drop the connection); TimedOut past a timeout (the
  // socket's, or limits'); ResourceExhausted when limits.lease runs out; IOError on socket errors.
  Status Receive(std::string* body, int* received_fd = nullptr, const ReceiveLimits& limits = {});

  // Sets a receive timeout (0: none); Receive then fails with TimedOut.
  Status SetReceiveTimeout(int timeout_ms);

  // Wakes a thread blocked in Receive (which then returns Unavailable).
  void Shutdown();

  // Process id of the peer (SO_PEERCRED), or -1.
  pid_t PeerPid() const;
  // The peer's credentials (SO_PEERCRED, SO_PEERGROUPS). IOError when the kernel has none.
  Result<PeerCredentials> Peer() const;
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
