#include "ipc/unix_socket.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
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

// Reads exactly n bytes. Unavailable on EOF at a message boundary or mid-message.
Status ReadFully(int fd, char* p, size_t n) {
  while (n > 0) {
    ssize_t r = ::recv(fd, p, n, 0);
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

}  // namespace

std::string DefaultSocketPath() {
  if (const char* env = std::getenv("STRATA_SOCKET"); env != nullptr && *env != '\0') return env;
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg != nullptr && *xdg != '\0')
    return std::string(xdg) + "/strata.sock";
  return "/tmp/strata-" + std::to_string(::getuid()) + ".sock";
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

Status UnixConnection::Receive(std::string* body, int* received_fd) {
  if (received_fd) *received_fd = -1;
  unsigned char prefix[kLengthPrefixBytes];
  iovec iov{prefix, sizeof(prefix)};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t r;
  do {
    r = ::recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return Status::Unavailable("connection closed by peer");
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Status::TimedOut("receive timed out");
    return Errno("recvmsg");
  }
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c), sizeof(int));
      if (received_fd) *received_fd = fd;
      else ::close(fd);
    }
  }
  if (static_cast<size_t>(r) < sizeof(prefix))
    STRATA_RETURN_IF_ERROR(ReadFully(fd_, reinterpret_cast<char*>(prefix) + r,
                                     sizeof(prefix) - static_cast<size_t>(r)));
  uint32_t len = 0;
  for (size_t i = 0; i < kLengthPrefixBytes; ++i) len |= uint32_t{prefix[i]} << (8 * i);
  if (len > kMaxMessageBytes)
    return Status::InvalidArgument("message length " + std::to_string(len) +
                                   " exceeds the limit of " + std::to_string(kMaxMessageBytes));
  body->resize(len);
  return ReadFully(fd_, body->data(), len);
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
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Errno("socket");
  // Create the socket file with the requested mode from the start (no window with a wider one).
  mode_t old_umask = ::umask(static_cast<mode_t>(~mode & 0777));
  int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  ::umask(old_umask);
  if (rc != 0) {
    Status s = Errno("bind '" + path + "'");
    ::close(fd);
    return s;
  }
  if (::chmod(path.c_str(), mode) != 0 || ::listen(fd, 128) != 0) {
    Status s = Errno("listen '" + path + "'");
    ::close(fd);
    ::unlink(path.c_str());
    return s;
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
