// Unix socket transport: framing, descriptor passing, limits, stale sockets, permissions.
#include "ipc/unix_socket.h"

#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <thread>

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

TEST_CASE("Shutdown wakes a blocked Accept", "[lib]") {
  auto listener = UnixListener::Listen(SocketPath("shutdown"), 0600);
  REQUIRE(listener.ok());
  std::thread t([&] { CHECK(listener->Accept().status().code() == StatusCode::kAborted); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  listener->Shutdown();
  t.join();
}

}  // namespace
}  // namespace strata::ipc
