// UcxEngine's listen_addr: the engine's TCP listening sockets exist only on the interface that
// holds the configured address (read back from /proc/net/tcp{,6} for this process's sockets), an
// address no interface holds is refused, and engines confined to loopback still talk.
#include "transport/ucx/ucx_engine.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

namespace strata::transport {
namespace {

// Local addresses (hex, as /proc/net/tcp writes them) of this process's listening TCP sockets.
std::vector<std::string> ListeningAddresses() {
  std::set<std::string> inodes;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    const std::string target = std::filesystem::read_symlink(e.path(), ec).string();
    if (!ec && target.rfind("socket:[", 0) == 0)
      inodes.insert(target.substr(8, target.size() - 9));
  }
  std::vector<std::string> out;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string sl, local, remote, state, queues, timer, retr, uid, timeout, inode;
      f >> sl >> local >> remote >> state >> queues >> timer >> retr >> uid >> timeout >> inode;
      if (state == "0A" && inodes.count(inode)) out.push_back(local.substr(0, local.find(':')));
    }
  }
  return out;
}

TEST_CASE("UcxEngine confined to loopback listens on loopback only", "[transport]") {
  UcxEngineOptions o;
  o.listen_addr = "127.0.0.1";
  o.tls = "tcp";
  auto engine = UcxEngine::Open(std::move(o));
  INFO(engine.status().ToString());
  REQUIRE(engine.ok());
  CHECK((*engine)->net_device() == "lo");
  const auto listening = ListeningAddresses();
  INFO("listening on " << listening.size() << " sockets");
  REQUIRE_FALSE(listening.empty());
  for (const auto& a : listening) CHECK(a == "0100007F");  // 127.0.0.1
}

TEST_CASE("UcxEngine refuses a listen address that no interface holds", "[transport]") {
  UcxEngineOptions o;
  o.listen_addr = "203.0.113.77";  // TEST-NET-3: on no interface
  auto engine = UcxEngine::Open(std::move(o));
  CHECK(engine.status().IsInvalidArgument());
  UcxEngineOptions bad;
  bad.listen_addr = "not-an-address";
  CHECK(UcxEngine::Open(std::move(bad)).status().IsInvalidArgument());
}

TEST_CASE("Two UcxEngines confined to loopback exchange a control message over tcp",
          "[transport]") {
  std::promise<std::string> got;
  UcxEngineOptions server_opts;
  server_opts.listen_addr = "127.0.0.1";
  server_opts.tls = "tcp";
  server_opts.handlers.on_control = [&](ConnId, std::span<const std::byte> m) {
    got.set_value(std::string(reinterpret_cast<const char*>(m.data()), m.size()));
  };
  auto server = UcxEngine::Open(std::move(server_opts));
  REQUIRE(server.ok());
  UcxEngineOptions client_opts;
  client_opts.listen_addr = "127.0.0.1";
  client_opts.tls = "tcp";
  auto client = UcxEngine::Open(std::move(client_opts));
  REQUIRE(client.ok());
  auto conn = (*client)->Connect((*server)->worker_address());
  INFO(conn.status().ToString());
  REQUIRE(conn.ok());
  const std::string text = "over loopback";
  std::vector<std::byte> msg(reinterpret_cast<const std::byte*>(text.data()),
                             reinterpret_cast<const std::byte*>(text.data()) + text.size());
  (*client)->SendControl(*conn, std::move(msg));
  auto f = got.get_future();
  REQUIRE(f.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
  CHECK(f.get() == text);
}

}  // namespace
}  // namespace strata::transport
