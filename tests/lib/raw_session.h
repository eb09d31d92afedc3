// A session spoken by hand over the daemon's socket, as a hostile or broken client would: a Hello
// with a sealed staging memfd, then any request, each answer decoded. For the Catch2 tests of
// tests/lib that start a daemon (transport errors fail the test with REQUIRE); the forked attacker
// processes of daemon_root_test.cc, which must not use Catch2, keep their own session and use only
// RawConnect and ReadResponse from here (no Catch2 in them).
//
// Thread-safety: one thread per session.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <utility>

#include <catch2/catch.hpp>

#include "client/channel.h"
#include "ipc/ipc_protocol.h"
#include "ipc/unix_socket.h"
#include "strata/client.h"

namespace strata::testing {

// A raw connection to `path` (no Hello, no client library), or -1.
inline int RawConnect(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// The next response on raw connection `fd` (within 5 s), or its status when none comes; a
// descriptor sent with it goes to *received_fd.
inline Result<ipc::Response> ReadResponse(int fd, int* received_fd = nullptr) {
  ipc::UnixConnection conn(::dup(fd));
  STRATA_RETURN_IF_ERROR(conn.SetReceiveTimeout(5000));
  std::string body;
  STRATA_RETURN_IF_ERROR(conn.Receive(&body, received_fd));
  return ipc::DecodeResponse(std::as_bytes(std::span<const char>(body)));
}

// A normal client is served: it connects (Hello, pool mapping) with `options` and reads Stats.
inline void CheckServes(const std::string& socket, const ClientOptions& options = {}) {
  auto client = Client::Connect(socket, options);
  INFO(client.status().ToString());
  REQUIRE(client.ok());
  auto stats = (*client)->Stats();
  INFO(stats.status().ToString());
  CHECK(stats.ok());
}

struct RawSession {
  ipc::UnixConnection conn{-1};
  StagingMapping staging;  // offered with the Hello (`staging_bytes` of it)
  ipc::HelloReply hello;
  int hello_fd = -1;  // a descriptor the daemon sent with its HelloReply (none: slabs come by MapSlab)
  uint64_t next_id = 1;

  explicit RawSession(const std::string& socket, uint64_t staging_bytes = uint64_t{1} << 20) {
    auto c = ipc::UnixConnection::Connect(socket);
    REQUIRE(c.ok());
    conn = std::move(c).value();
    REQUIRE(conn.SetReceiveTimeout(5000).ok());
    auto s = StagingMapping::Create(staging_bytes);
    REQUIRE(s.ok());
    staging = std::move(s).value();
    ipc::Hello h;
    h.client_name = "raw-session";
    h.staging_bytes = staging_bytes;
    const ipc::Response r = Call(h, staging.fd(), &hello_fd);
    REQUIRE(r.status.ok());
    hello = std::get<ipc::HelloReply>(r.body);
  }

  // Sends `body` (with descriptor `pass_fd`) and returns the daemon's answer to it; a descriptor
  // sent with the answer goes to *received_fd.
  ipc::Response Call(ipc::RequestBody body, int pass_fd = -1, int* received_fd = nullptr) {
    const ipc::Request request{next_id++, std::move(body)};
    REQUIRE(conn.Send(ipc::EncodeRequest(request), pass_fd).ok());
    std::string reply;
    REQUIRE(conn.Receive(&reply, received_fd).ok());
    auto decoded = ipc::DecodeResponse(std::as_bytes(std::span<const char>(reply)));
    REQUIRE(decoded.ok());
    REQUIRE(decoded->id == request.id);
    return std::move(decoded).value();
  }
};

}  // namespace strata::testing
