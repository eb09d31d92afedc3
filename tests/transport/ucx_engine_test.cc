// UcxEngine's listen_addr: the engine's TCP listening sockets exist only on the interface that
// holds the configured address (read back from /proc/net/tcp{,6} for this process's sockets), an
// address no interface holds is refused, and engines confined to loopback still talk. Per-unit
// registration: a unit whose memory was replaced at the same address is registered again and
// data lands in the new memory.
#include "transport/ucx/ucx_engine.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

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

// A shared mapping of a fresh memfd of `bytes` at `at` (MAP_FIXED when `at` is set); its fd.
int MapMemfd(std::byte** at, size_t bytes) {
  const int fd = ::memfd_create("ucx-engine-test", MFD_CLOEXEC);
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, static_cast<off_t>(bytes)) == 0);
  void* p = ::mmap(*at, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | (*at ? MAP_FIXED : 0), fd, 0);
  REQUIRE(p != MAP_FAILED);
  *at = static_cast<std::byte*>(p);
  return fd;
}

TEST_CASE("UcxEngine registers a region per unit and again a unit whose memory was replaced",
          "[transport]") {
  constexpr size_t kUnit = size_t{1} << 20;
  std::byte* base = nullptr;
  const int old_fd = MapMemfd(&base, 4 * kUnit);
  std::promise<Status> landed;
  UcxEngineOptions server_opts;
  server_opts.listen_addr = "127.0.0.1";
  server_opts.tls = "tcp";
  server_opts.rndv_threshold = 4096;  // the 1 MiB message goes by rendezvous into the unit
  server_opts.regions = {MemoryRegion{base, 4 * kUnit, kUnit}};
  server_opts.handlers.on_data = [&](ConnId, std::span<const std::byte>, size_t length,
                                     std::byte** dest, std::vector<DataPiece>*, uint64_t*) {
    if (length == kUnit) *dest = base + 2 * kUnit;
  };
  server_opts.handlers.on_data_done = [&](ConnId, uint64_t, const Status& st) {
    landed.set_value(st);
  };
  auto server = UcxEngine::Open(std::move(server_opts));
  INFO(server.status().ToString());
  REQUIRE(server.ok());

  // Unit 2 gets fresh memory at the same address (as a host slab renewed for another tenant).
  std::byte* unit2 = base + 2 * kUnit;
  const int new_fd = MapMemfd(&unit2, kUnit);
  REQUIRE(unit2 == base + 2 * kUnit);
  CHECK((*server)->units_reregistered() == 0);
  REQUIRE((*server)->ReregisterUnit(unit2).ok());
  CHECK((*server)->units_reregistered() == 1);
  CHECK((*server)->ReregisterUnit(unit2 + 4096).IsInvalidArgument());  // not a unit's start
  CHECK((*server)->ReregisterUnit(base + 4 * kUnit).IsInvalidArgument());  // outside
  CHECK((*server)->units_reregistered() == 1);

  UcxEngineOptions client_opts;
  client_opts.listen_addr = "127.0.0.1";
  client_opts.tls = "tcp";
  client_opts.rndv_threshold = 4096;
  auto client = UcxEngine::Open(std::move(client_opts));
  REQUIRE(client.ok());
  auto conn = (*client)->Connect((*server)->worker_address());
  REQUIRE(conn.ok());
  std::vector<std::byte> data(kUnit);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::byte>(i * 7 + 3);
  std::promise<Status> sent;
  const std::byte header[8] = {};
  (*client)->SendData(*conn, header, data.data(), data.size(),
                      [&](const Status& st) { sent.set_value(st); });
  auto f = landed.get_future();
  REQUIRE(f.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
  const Status st = f.get();
  INFO(st.ToString());
  REQUIRE(st.ok());
  REQUIRE(sent.get_future().get().ok());
  // The bytes are in the new memfd (read through a mapping of its own), not the old one.
  auto* view = static_cast<std::byte*>(::mmap(nullptr, kUnit, PROT_READ, MAP_SHARED, new_fd, 0));
  REQUIRE(view != MAP_FAILED);
  CHECK(std::memcmp(view, data.data(), kUnit) == 0);
  auto* old_view = static_cast<std::byte*>(
      ::mmap(nullptr, kUnit, PROT_READ, MAP_SHARED, old_fd, static_cast<off_t>(2 * kUnit)));
  REQUIRE(old_view != MAP_FAILED);
  CHECK(std::memcmp(old_view, data.data(), 4096) != 0);
  ::munmap(view, kUnit);
  ::munmap(old_view, kUnit);
  (*client).reset();
  (*server).reset();
  ::munmap(base, 4 * kUnit);
  ::close(new_fd);
  ::close(old_fd);
}

}  // namespace
}  // namespace strata::transport
