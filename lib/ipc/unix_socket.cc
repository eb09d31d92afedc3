#include "ipc/unix_socket.h"

#include <errno.h>
#include <poll.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <cstring>

#include "ipc/ipc_protocol.h"

namespace strata::ipc {
namespace {

Status Errno(const std::string& what) {
  return Status::IOError(what + ": " + std::strerror(errno));
}

Result<sockaddr_un> MakeAddress(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path))
    return Status::InvalidArgument("socket path '" + path + "' is empty or longer than " +
                                   std::to_string(sizeof(addr.sun_path) - 1) + " bytes");
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

using Clock = std::chrono::steady_clock;

// Descriptors one message may carry before the kernel truncates (and closes) the rest.
constexpr size_t kMaxPassedFds = 16;
// Bytes a message body grows by per read: a stalled sender holds at most this much beyond what
// it has sent.
constexpr size_t kBodyChunk = 64 * 1024;

// Waits until `fd` is readable or `deadline` passes (TimedOut). No deadline: returns at once.
Status WaitReadable(int fd, const std::optional<Clock::time_point>& deadline) {
  if (!deadline) return Status::OK();
  while (true) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - Clock::now()).count();
    if (left <= 0) return Status::TimedOut("receive timed out");
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1 << 30)));
    if (r > 0) return Status::OK();  // readable, closed or failed: recv says which
    if (r < 0 && errno != EINTR) return Errno("poll");
  }
}

// Reads exactly n bytes. Unavailable on EOF at a message boundary or mid-message. Bytes that
// have arrived already (a message's body, sent with its length) are read without a poll first:
// one system call per message part, not two.
Status ReadFully(int fd, char* p, size_t n, const std::optional<Clock::time_point>& deadline) {
  while (n > 0) {
    ssize_t r = ::recv(fd, p, n, MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      STRATA_RETURN_IF_ERROR(WaitReadable(fd, deadline));
      r = ::recv(fd, p, n, 0);
    }
    if (r > 0) {
      p += r;
      n -= static_cast<size_t>(r);
    } else if (r == 0) {
      return Status::Unavailable("connection closed by peer");
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return Status::TimedOut("receive timed out");
    } else {
      return Errno("recv");
    }
  }
  return Status::OK();
}

bool TrustedOwner(uid_t owner, std::span<const uid_t> trusted) {
  return owner == ::geteuid() || owner == 0 ||
         std::find(trusted.begin(), trusted.end(), owner) != trusted.end();
}

// Checks the directory `dir` that holds (or will hold) a socket: a real directory, owned by us,
// root or a trusted uid, not writable by group or others unless sticky.
Status CheckSocketDirectory(const std::string& dir, std::span<const uid_t> trusted = {}) {
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0)
    return Status::IOError("socket directory '" + dir + "': " + std::strerror(errno));
  if (!S_ISDIR(st.st_mode))
    return Status::PermissionDenied("socket directory '" + dir +
                                    "' is not a directory (a symbolic link or a file)");
  if (!TrustedOwner(st.st_uid, trusted))
    return Status::PermissionDenied("socket directory '" + dir + "' is owned by uid " +
                                    std::to_string(st.st_uid) + ", not by uid " +
                                    std::to_string(::geteuid()) + " or root");
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (st.st_mode & S_ISVTX) == 0)
    return Status::PermissionDenied("socket directory '" + dir +
                                    "' is writable by group or others and not sticky");
  return Status::OK();
}

std::string ParentDirectory(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

std::string DefaultSocketPath() {
  if (const char* env = std::getenv("STRATA_SOCKET"); env != nullptr && *env != '\0') return env;
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg != nullptr && *xdg != '\0')
    return std::string(xdg) + "/strata/strata.sock";
  return "/tmp/strata-" + std::to_string(::getuid()) + "/strata.sock";
}

Status PrepareSocketDirectory(const std::string& socket_path, gid_t group) {
  const std::string dir = ParentDirectory(socket_path);
  const mode_t mode = group == kNoGroup ? 0700 : 0750;
  // mkdir -p: each missing component is created with `mode` (umask cleared for the call).
  for (size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    const std::string part = dir.substr(0, pos);
    const mode_t old_umask = ::umask(0);
    const int rc = ::mkdir(part.c_str(), mode);
    const int err = errno;
    ::umask(old_umask);
    if (rc == 0) {
      if (group != kNoGroup && ::chown(part.c_str(), static_cast<uid_t>(-1), group) != 0)
        return Errno("chown socket directory '" + part + "' to gid " + std::to_string(group));
    } else if (err != EEXIST) {
      errno = err;
      return Errno("mkdir socket directory '" + part + "'");
    }
  }
  return CheckSocketDirectory(dir);
}

Status CheckDaemonSocketOwner(const std::string& path, std::span<const uid_t> trusted_uids) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0)
    return Status::Unavailable("no daemon socket at '" + path + "': " + std::strerror(errno));
  if (!S_ISSOCK(st.st_mode))
    return Status::PermissionDenied("'" + path + "' is not a socket");
  if (!TrustedOwner(st.st_uid, trusted_uids))
    return Status::PermissionDenied(
        "daemon socket '" + path + "' is owned by uid " + std::to_string(st.st_uid) +
        ", not by this user (uid " + std::to_string(::geteuid()) +
        "), root or a trusted daemon user: refusing to hand it KV data (if that uid runs your "
        "daemon, set STRATA_DAEMON_USER to its name or uid)");
  return CheckSocketDirectory(ParentDirectory(path), trusted_uids);
}

Result<std::vector<uid_t>> TrustedDaemonUids(std::span<const uint32_t> configured) {
  std::vector<uid_t> uids(configured.begin(), configured.end());
  const char* env = std::getenv("STRATA_DAEMON_USER");
  if (env == nullptr || *env == '\0') return uids;
  const std::string list = env;
  size_t begin = 0;
  while (begin <= list.size()) {
    const size_t comma = std::min(list.find(',', begin), list.size());
    const std::string name = list.substr(begin, comma - begin);
    begin = comma + 1;
    if (name.empty()) continue;
    uint32_t id = 0;
    auto [ptr, ec] = std::from_chars(name.data(), name.data() + name.size(), id);
    if (ec == std::errc() && ptr == name.data() + name.size()) {
      uids.push_back(id);
      continue;
    }
    struct passwd pw;
    struct passwd* found = nullptr;
    std::vector<char> buf(16384);
    if (::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found) != 0 || found == nullptr)
      return Status::InvalidArgument("STRATA_DAEMON_USER: no user named '" + name + "'");
    uids.push_back(found->pw_uid);
  }
  return uids;
}

bool ByteBudget::Lease::Grow(size_t n) {
  size_t used = budget_->used_.load(std::memory_order_relaxed);
  do {
    if (n > budget_->limit_ || used > budget_->limit_ - n) return false;
  } while (!budget_->used_.compare_exchange_weak(used, used + n, std::memory_order_relaxed));
  bytes_ += n;
  return true;
}

void ByteBudget::Lease::Reset() {
  if (bytes_ == 0) return;
  budget_->used_.fetch_sub(bytes_, std::memory_order_relaxed);
  bytes_ = 0;
}

Result<UnixConnection> UnixConnection::Connect(const std::string& path) {
  STRATA_ASSIGN_OR_RETURN(sockaddr_un addr, MakeAddress(path));
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Errno("socket");
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    Status st = Status::Unavailable("cannot connect to '" + path + "': " + std::strerror(errno));
    ::close(fd);
    return st;
  }
  return UnixConnection(fd);
}

UnixConnection& UnixConnection::operator=(UnixConnection&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

UnixConnection::~UnixConnection() {
  if (fd_ >= 0) ::close(fd_);
}

Status UnixConnection::Send(std::string_view body, int pass_fd) {
  if (body.size() > kMaxMessageBytes)
    return Status::InvalidArgument("message of " + std::to_string(body.size()) +
                                   " bytes exceeds the limit");
  unsigned char prefix[kLengthPrefixBytes];
  const uint32_t len = static_cast<uint32_t>(body.size());
  for (size_t i = 0; i < kLengthPrefixBytes; ++i) prefix[i] = static_cast<unsigned char>(len >> (8 * i));

  iovec iov[2] = {{prefix, sizeof(prefix)}, {const_cast<char*>(body.data()), body.size()}};
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = 2;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  if (pass_fd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
  }
  size_t total = sizeof(prefix) + body.size();
  size_t sent = 0;
  while (sent < total) {
    ssize_t r = ::sendmsg(fd_, &msg, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EPIPE || errno == ECONNRESET)
        return Status::Unavailable("connection closed by peer");
      return Errno("sendmsg");
    }
    sent += static_cast<size_t>(r);
    msg.msg_control = nullptr;  // the descriptor went with the first bytes
    msg.msg_controllen = 0;
    // Advance the iovecs past what was sent.
    size_t skip = static_cast<size_t>(r);
    while (msg.msg_iovlen > 0 && skip >= msg.msg_iov[0].iov_len) {
      skip -= msg.msg_iov[0].iov_len;
      ++msg.msg_iov;
      --msg.msg_iovlen;
    }
    if (msg.msg_iovlen > 0) {
      msg.msg_iov[0].iov_base = static_cast<char*>(msg.msg_iov[0].iov_base) + skip;
      msg.msg_iov[0].iov_len -= skip;
    }
  }
  return Status::OK();
}

Status UnixConnection::Receive(std::string* body, int* received_fd, const ReceiveLimits& limits) {
  if (received_fd) *received_fd = -1;
  unsigned char prefix[kLengthPrefixBytes];
  iovec iov{prefix, sizeof(prefix)};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxPassedFds)];
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  std::optional<Clock::time_point> deadline;
  if (limits.idle_timeout_ms > 0)
    deadline = Clock::now() + std::chrono::milliseconds(limits.idle_timeout_ms);
  ssize_t r;
  do {
    STRATA_RETURN_IF_ERROR(WaitReadable(fd_, deadline));
    r = ::recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return Status::Unavailable("connection closed by peer");
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Status::TimedOut("receive timed out");
    return Errno("recvmsg");
  }
  // Keep the first descriptor if the caller wants one; close every other (a message may carry
  // several, in one or more SCM_RIGHTS blocks).
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < n; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      if (received_fd != nullptr && *received_fd < 0) *received_fd = fd;
      else ::close(fd);
    }
  }
  deadline.reset();
  if (limits.message_timeout_ms > 0)
    deadline = Clock::now() + std::chrono::milliseconds(limits.message_timeout_ms);
  Status st;
  if (static_cast<size_t>(r) < sizeof(prefix))
    st = ReadFully(fd_, reinterpret_cast<char*>(prefix) + r, sizeof(prefix) - static_cast<size_t>(r),
                   deadline);
  uint32_t len = 0;
  for (size_t i = 0; i < kLengthPrefixBytes; ++i) len |= uint32_t{prefix[i]} << (8 * i);
  if (st.ok() && len > kMaxMessageBytes)
    st = Status::InvalidArgument("message length " + std::to_string(len) +
                                 " exceeds the limit of " + std::to_string(kMaxMessageBytes));
  // The body grows as its bytes arrive: an announced length costs nothing until it is sent.
  body->clear();
  size_t got = 0;
  while (st.ok() && got < len) {
    const size_t want = std::min<size_t>(len - got, kBodyChunk);
    const size_t old_capacity = body->capacity();
    body->resize(got + want);
    if (limits.lease != nullptr && body->capacity() > old_capacity &&
        !limits.lease->Grow(body->capacity() - old_capacity)) {
      st = Status::ResourceExhausted("the daemon's receive buffers are full (" +
                                     std::to_string(limits.lease->bytes()) + " bytes held by this "
                                     "connection)");
      break;
    }
    st = ReadFully(fd_, body->data() + got, want, deadline);
    got += want;
  }
  if (!st.ok() && received_fd != nullptr && *received_fd >= 0) {
    ::close(*received_fd);
    *received_fd = -1;
  }
  return st;
}

Status UnixConnection::SetReceiveTimeout(int timeout_ms) {
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  if (::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0)
    return Errno("setsockopt(SO_RCVTIMEO)");
  return Status::OK();
}

void UnixConnection::Shutdown() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
}

pid_t UnixConnection::PeerPid() const {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(fd_, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -1;
  return cred.pid;
}

Result<PeerCredentials> UnixConnection::Peer() const {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(fd_, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return Errno("SO_PEERCRED");
  PeerCredentials out;
  out.pid = cred.pid;
  out.uid = cred.uid;
  out.gid = cred.gid;
#ifdef SO_PEERGROUPS
  std::vector<gid_t> groups(64);
  socklen_t glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
  int rc = ::getsockopt(fd_, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen);
  if (rc != 0 && errno == ERANGE) {  // glen now holds the size needed
    groups.resize(glen / sizeof(gid_t));
    glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    rc = ::getsockopt(fd_, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen);
  }
  if (rc == 0) {
    groups.resize(glen / sizeof(gid_t));
    out.groups = std::move(groups);
  }
#endif
  return out;
}

Result<UnixListener> UnixListener::Listen(const std::string& path, mode_t mode) {
  STRATA_ASSIGN_OR_RETURN(sockaddr_un addr, MakeAddress(path));
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return Status::AlreadyExists("'" + path + "' exists and is not a socket");
    if (UnixConnection::Connect(path).ok())
      return Status::AlreadyExists("a daemon already listens on '" + path + "'");
    ::unlink(path.c_str());  // stale socket of a dead daemon
  }
  // The socket is bound and listening under a temporary name beside `path` and only then linked
  // to `path`, so the file a client waits for never exists before connects succeed (bound but not
  // yet listening, a connect is refused). link(), unlike rename(), fails when `path` appeared
  // meanwhile: a second daemon racing for the path never replaces the first's socket. A path too
  // long for the temporary name is bound directly (the window comes back, nothing else).
  std::string bound = path + "." + std::to_string(::getpid()) + ".tmp";
  Result<sockaddr_un> bound_addr = MakeAddress(bound);
  if (!bound_addr.ok()) bound = path;
  const sockaddr_un& at = bound_addr.ok() ? *bound_addr : addr;
  if (bound != path) ::unlink(bound.c_str());  // left by a daemon of this pid that was killed
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Errno("socket");
  // Create the socket file with the requested mode from the start (no window with a wider one).
  mode_t old_umask = ::umask(static_cast<mode_t>(~mode & 0777));
  int rc = ::bind(fd, reinterpret_cast<const sockaddr*>(&at), sizeof(at));
  ::umask(old_umask);
  if (rc != 0) {
    Status s = Errno("bind '" + bound + "'");
    ::close(fd);
    return s;
  }
  if (::chmod(bound.c_str(), mode) != 0 || ::listen(fd, 128) != 0) {
    Status s = Errno("listen '" + bound + "'");
    ::close(fd);
    ::unlink(bound.c_str());
    return s;
  }
  if (bound != path) {
    rc = ::link(bound.c_str(), path.c_str());
    const int err = errno;
    ::unlink(bound.c_str());
    if (rc != 0) {
      ::close(fd);
      if (err == EEXIST) return Status::AlreadyExists("'" + path + "' appeared while binding");
      errno = err;
      return Errno("link '" + bound + "' to '" + path + "'");
    }
  }
  return UnixListener(fd, path);
}

UnixListener::~UnixListener() { Shutdown(); }

Result<UnixConnection> UnixListener::Accept() {
  while (true) {
    const int listen_fd = fd_.load();
    if (listen_fd < 0) return Status::Aborted("listener shut down");
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) return UnixConnection(fd);
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EINVAL || errno == EBADF) return Status::Aborted("listener shut down");
    if (errno == EMFILE || errno == ENFILE) {
      ::poll(nullptr, 0, 50);  // out of descriptors: back off instead of spinning
      continue;
    }
    return Errno("accept");
  }
}

void UnixListener::Shutdown() {
  const int fd = fd_.exchange(-1);
  if (fd >= 0) {
    ::shutdown(fd, SHUT_RDWR);  // wakes a blocked accept with EINVAL
    ::close(fd);
    ::unlink(path_.c_str());
  }
}

}  // namespace strata::ipc
