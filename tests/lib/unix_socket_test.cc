// Unix socket transport: framing, descriptor passing, limits, stale sockets, permissions, the
// default path and its directory, the client's check of the daemon's socket, receive budgets.
#include "ipc/unix_socket.h"

#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "ipc/ipc_protocol.h"

namespace strata::ipc {
namespace {

std::string SocketPath(const char* name) {
  return "/tmp/strata-test-" + std::string(name) + "-" + std::to_string(getpid()) + ".sock";
}

TEST_CASE("Messages and a descriptor cross a Unix socket", "[lib]") {
  const std::string path = SocketPath("fd");
  auto listener = UnixListener::Listen(path, 0600);
  REQUIRE(listener.ok());
  struct stat st;
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);

  std::thread server([&] {
    auto conn = listener->Accept();
    REQUIRE(conn.ok());
    std::string body;
    REQUIRE(conn->Receive(&body).ok());
    CHECK(body == "ping");
    int mfd = ::memfd_create("strata-test", MFD_CLOEXEC);
    REQUIRE(::ftruncate(mfd, 4096) == 0);
    void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    std::memcpy(p, "shared!", 8);
    REQUIRE(conn->Send("pong", mfd).ok());
    ::close(mfd);
    REQUIRE(conn->Receive(&body).ok());  // the client writes through its mapping, then says so
    CHECK(std::string(static_cast<char*>(p)) == "client");
    ::munmap(p, 4096);
    // A large message and an empty one.
    REQUIRE(conn->Send(std::string(3 << 20, 'x')).ok());
    REQUIRE(conn->Send("").ok());
  });

  auto client = UnixConnection::Connect(path);
  REQUIRE(client.ok());
  CHECK(client->PeerPid() == getpid());
  REQUIRE(client->Send("ping").ok());
  std::string body;
  int fd = -1;
  REQUIRE(client->Receive(&body, &fd).ok());
  CHECK(body == "pong");
  REQUIRE(fd >= 0);
  void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  REQUIRE(p != MAP_FAILED);
  CHECK(std::string(static_cast<char*>(p)) == "shared!");
  std::memcpy(p, "client", 7);
  REQUIRE(client->Send("done").ok());
  REQUIRE(client->Receive(&body).ok());
  CHECK(body.size() == (3u << 20));
  REQUIRE(client->Receive(&body).ok());
  CHECK(body.empty());
  server.join();
  ::munmap(p, 4096);
  ::close(fd);
  CHECK(client->Receive(&body).code() == StatusCode::kUnavailable);  // server side closed
}

TEST_CASE("Oversized lengths and short messages are errors, not crashes", "[lib]") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  UnixConnection a(sv[0]), b(sv[1]);
  // A length prefix above the limit.
  const uint32_t huge = static_cast<uint32_t>(kMaxMessageBytes + 1);
  REQUIRE(::write(sv[0], &huge, 4) == 4);
  std::string body;
  Status st = b.Receive(&body);
  CHECK(st.IsInvalidArgument());
  // A message cut short by the peer closing.
  const uint32_t ten = 10;
  REQUIRE(::write(sv[0], &ten, 4) == 4);
  REQUIRE(::write(sv[0], "abc", 3) == 3);
  a.Shutdown();
  CHECK(b.Receive(&body).code() == StatusCode::kUnavailable);
  CHECK(a.Send(std::string(kMaxMessageBytes + 1, 'x')).IsInvalidArgument());
}

TEST_CASE("Receive times out when asked to", "[lib]") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  UnixConnection a(sv[0]), b(sv[1]);
  REQUIRE(b.SetReceiveTimeout(100).ok());
  std::string body;
  CHECK(b.Receive(&body).IsTimedOut());
}

TEST_CASE("A live socket is not stolen and a stale one is replaced", "[lib]") {
  const std::string path = SocketPath("stale");
  {
    auto first = UnixListener::Listen(path, 0600);
    REQUIRE(first.ok());
    auto second = UnixListener::Listen(path, 0600);
    REQUIRE_FALSE(second.ok());
    CHECK(second.status().code() == StatusCode::kAlreadyExists);
  }
  // Leave a stale socket file behind, as a killed daemon would.
  {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, path.c_str());
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    ::close(fd);
  }
  auto again = UnixListener::Listen(path, 0600);
  CHECK(again.ok());
  CHECK(UnixConnection::Connect("/tmp/definitely-not-here.sock").status().code() ==
        StatusCode::kUnavailable);
  CHECK(UnixListener::Listen(std::string(200, 'x'), 0600).status().IsInvalidArgument());
}

TEST_CASE("The socket file appears only once it listens, under its own name only", "[lib]") {
  // A client that waits for the file and connects at once is never refused (the daemon binds and
  // listens under a temporary name, then links it into place) and nothing else is left behind.
  const std::string path = SocketPath("appears");
  const auto dir = std::filesystem::path(path).parent_path();
  const auto stem = std::filesystem::path(path).filename().string();
  bool connected = false;
  std::thread waiter([&] {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!std::filesystem::exists(path) && std::chrono::steady_clock::now() < give_up)
      std::this_thread::yield();
    connected = UnixConnection::Connect(path).ok();
  });
  auto listener = UnixListener::Listen(path, 0600);
  waiter.join();
  REQUIRE(listener.ok());
  CHECK(connected);
  struct stat st;
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 0777) == 0600);
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    CHECK_FALSE((name.rfind(stem + ".", 0) == 0 && name.size() > 4 &&
                 name.compare(name.size() - 4, 4, ".tmp") == 0));
  }
}

TEST_CASE("Shutdown wakes a blocked Accept", "[lib]") {
  auto listener = UnixListener::Listen(SocketPath("shutdown"), 0600);
  REQUIRE(listener.ok());
  std::thread t([&] { CHECK(listener->Accept().status().code() == StatusCode::kAborted); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  listener->Shutdown();
  t.join();
}

size_t OpenFds() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

// Sends `body` framed, with `nfds` fresh memfds attached to its first byte.
void SendWithFds(int fd, const std::string& body, int nfds) {
  std::vector<int> fds;
  for (int i = 0; i < nfds; ++i) fds.push_back(::memfd_create("strata-test-fd", MFD_CLOEXEC));
  std::string frame(4, '\0');
  const uint32_t len = static_cast<uint32_t>(body.size());
  std::memcpy(frame.data(), &len, 4);
  frame += body;
  iovec iov{frame.data(), frame.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  REQUIRE(::sendmsg(fd, &msg, 0) == static_cast<ssize_t>(frame.size()));
  for (int f : fds) ::close(f);
}

TEST_CASE("Descriptors that arrive with a message are closed unless asked for", "[lib]") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  UnixConnection b(sv[1]);
  const size_t before = OpenFds();
  std::string body;
  // Not asked for: every one of them is closed.
  for (int i = 0; i < 20; ++i) {
    SendWithFds(sv[0], "three", 3);
    REQUIRE(b.Receive(&body).ok());
    CHECK(body == "three");
  }
  CHECK(OpenFds() == before);
  // Asked for: the first is the caller's, the others are closed.
  SendWithFds(sv[0], "four", 4);
  int fd = -1;
  REQUIRE(b.Receive(&body, &fd).ok());
  CHECK(fd >= 0);
  CHECK(OpenFds() == before + 1);
  ::close(fd);
  ::close(sv[0]);
}

TEST_CASE("A message body is allocated as its bytes arrive and charged to the budget", "[lib]") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  UnixConnection a(sv[0]), b(sv[1]);
  ByteBudget budget(size_t{16} << 20);
  {
    // 8 MiB announced, 100 KiB sent, then the sender stalls: the receiver holds about what came.
    ByteBudget::Lease lease(&budget);
    ReceiveLimits limits;
    limits.message_timeout_ms = 200;
    limits.lease = &lease;
    const uint32_t len = static_cast<uint32_t>(kMaxMessageBytes);
    REQUIRE(::write(sv[0], &len, 4) == 4);
    std::string part(100 * 1024, 'x');
    REQUIRE(::write(sv[0], part.data(), part.size()) == static_cast<ssize_t>(part.size()));
    std::string body;
    CHECK(b.Receive(&body, nullptr, limits).IsTimedOut());
    CHECK(lease.bytes() > 0);
    CHECK(lease.bytes() <= size_t{512} << 10);
    CHECK(body.capacity() <= size_t{512} << 10);
    CHECK(budget.used() == lease.bytes());
  }
  CHECK(budget.used() == 0);  // the lease returned it
}

TEST_CASE("A receive over the shared budget is refused and idle or stalled receives time out",
          "[lib]") {
  ByteBudget budget(size_t{1} << 20);
  {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    UnixConnection a(sv[0]), b(sv[1]);
    std::thread sender([&] { (void)a.Send(std::string(size_t{2} << 20, 'y')); });
    ByteBudget::Lease lease(&budget);
    ReceiveLimits limits;
    limits.lease = &lease;
    std::string body;
    CHECK(b.Receive(&body, nullptr, limits).code() == StatusCode::kResourceExhausted);
    CHECK(budget.used() <= budget.limit());
    b.Shutdown();
    sender.join();
  }
  CHECK(budget.used() == 0);
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  UnixConnection a(sv[0]), b(sv[1]);
  ReceiveLimits idle;
  idle.idle_timeout_ms = 100;
  std::string body;
  CHECK(b.Receive(&body, nullptr, idle).IsTimedOut());
  // Within the idle time a whole message is received.
  REQUIRE(a.Send("hello").ok());
  REQUIRE(b.Receive(&body, nullptr, idle).ok());
  CHECK(body == "hello");
}

TEST_CASE("Peer credentials name the connecting process", "[lib]") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  UnixConnection a(sv[0]), b(sv[1]);
  auto peer = b.Peer();
  REQUIRE(peer.ok());
  CHECK(peer->pid == ::getpid());
  CHECK(peer->uid == ::geteuid());
  CHECK(peer->gid == ::getegid());
}

// Sets (or unsets, for nullptr) an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) ::setenv(name, value, 1);
    else ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_, old_->c_str(), 1);
    else ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST_CASE("The default socket lives in a private directory, never a file in /tmp", "[lib]") {
  ScopedEnv no_override("STRATA_SOCKET", nullptr);
  {
    ScopedEnv xdg("XDG_RUNTIME_DIR", "/run/user/4242");
    CHECK(DefaultSocketPath() == "/run/user/4242/strata/strata.sock");
  }
  ScopedEnv no_xdg("XDG_RUNTIME_DIR", nullptr);
  CHECK(DefaultSocketPath() == "/tmp/strata-" + std::to_string(::getuid()) + "/strata.sock");
  ScopedEnv explicit_path("STRATA_SOCKET", "/somewhere/s.sock");
  CHECK(DefaultSocketPath() == "/somewhere/s.sock");
}

std::string FreshDir(const char* name) {
  const std::string d = "/tmp/strata-test-" + std::string(name) + "-" + std::to_string(getpid());
  std::filesystem::remove_all(d);
  return d;
}

TEST_CASE("The daemon creates its socket directory 0700 and refuses an unsafe one", "[lib]") {
  const std::string root = FreshDir("sockdir");
  const std::string path = root + "/a/b/strata.sock";
  REQUIRE(PrepareSocketDirectory(path).ok());
  struct stat st;
  for (const std::string& d : {root, root + "/a", root + "/a/b"}) {
    REQUIRE(::stat(d.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0700);
  }
  REQUIRE(PrepareSocketDirectory(path).ok());  // again: it exists and is fine

  // Writable by others and not sticky: someone could swap the socket.
  REQUIRE(::chmod((root + "/a/b").c_str(), 0777) == 0);
  Status st1 = PrepareSocketDirectory(path);
  CHECK(st1.code() == StatusCode::kPermissionDenied);
  CHECK_THAT(st1.ToString(), Catch::Contains("writable by group or others"));
  // Sticky and world-writable, as /tmp: allowed (files there cannot be replaced by others).
  REQUIRE(::chmod((root + "/a/b").c_str(), 01777) == 0);
  CHECK(PrepareSocketDirectory(path).ok());

  // A symbolic link where the directory should be.
  REQUIRE(::symlink((root + "/a").c_str(), (root + "/link").c_str()) == 0);
  CHECK(PrepareSocketDirectory(root + "/link/strata.sock").code() ==
        StatusCode::kPermissionDenied);

  // Owned by another user: tests/lib/daemon_root_test.cc (needs root).
  std::filesystem::remove_all(root);
}

TEST_CASE("A client refuses a daemon socket that is not its user's or root's", "[lib]") {
  const std::string root = FreshDir("owner");
  REQUIRE(PrepareSocketDirectory(root + "/s.sock").ok());
  const std::string path = root + "/s.sock";
  CHECK(CheckDaemonSocketOwner(path).code() == StatusCode::kUnavailable);  // nothing there
  {
    auto listener = UnixListener::Listen(path, 0600);
    REQUIRE(listener.ok());
    CHECK(CheckDaemonSocketOwner(path).ok());
    REQUIRE(::chmod(root.c_str(), 0777) == 0);  // a directory anyone may swap sockets in
    CHECK(CheckDaemonSocketOwner(path).code() == StatusCode::kPermissionDenied);
    REQUIRE(::chmod(root.c_str(), 0700) == 0);
    // Another user's socket: tests/lib/daemon_root_test.cc (needs root).
  }
  // A regular file where the socket should be.
  { std::ofstream(root + "/file.sock") << "x"; }
  CHECK(CheckDaemonSocketOwner(root + "/file.sock").code() == StatusCode::kPermissionDenied);
  std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace strata::ipc
