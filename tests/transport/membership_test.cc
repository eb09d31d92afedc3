// Membership: static lists, base64, and etcd membership against a real etcd process (leases,
// keep-alive, watch, expiry of a SIGKILLed member, clean leave, malformed entries).
#include "transport/membership/membership.h"

#include <signal.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "etcd_process.h"
#include "transport/membership/etcd_client.h"
#include "transport/membership/etcd_membership.h"
#include "transport/membership/static_membership.h"
#include "wait_for.h"

namespace strata::transport {
namespace {

using Clock = std::chrono::steady_clock;
using testing::WaitFor;

Member M(std::string id) {
  std::vector<std::byte> addr;
  for (char c : id + "-worker-address") addr.push_back(static_cast<std::byte>(c));
  Member m;
  m.id = id;
  m.address = addr;
  m.host = "host-" + id;
  return m;
}

std::vector<std::string> Ids(const std::vector<Member>& ms) {
  std::vector<std::string> out;
  for (const auto& m : ms) out.push_back(m.id);
  return out;
}

TEST_CASE("base64 round-trips and rejects bad input", "[transport][membership]") {
  for (size_t n = 0; n < 20; ++n) {
    std::vector<std::byte> b(n);
    for (size_t i = 0; i < n; ++i) b[i] = static_cast<std::byte>(i * 37 + 1);
    auto back = Base64Decode(Base64Encode(b));
    REQUIRE(back.ok());
    CHECK(*back == b);
  }
  CHECK(Base64Encode(std::vector<std::byte>{std::byte{'f'}, std::byte{'o'}}) == "Zm8=");
  CHECK(Base64Decode("Zm9v!").status().IsInvalidArgument());
  CHECK(Base64Decode("Zm=v").status().IsInvalidArgument());
}

TEST_CASE("static membership lists its members sorted and refuses duplicates",
          "[transport][membership]") {
  auto s = StaticMembership::Open({M("c"), M("a"), M("b")});
  REQUIRE(s.ok());
  CHECK(Ids((*s)->Members()) == std::vector<std::string>{"a", "b", "c"});
  std::vector<Member> seen;
  (*s)->SetListener([&](const std::vector<Member>& m) { seen = m; });
  CHECK(seen.size() == 3);
  CHECK(StaticMembership::Open({M("a"), M("a")}).status().IsInvalidArgument());
  CHECK(StaticMembership::Open({Member{}}).status().IsInvalidArgument());
}

TEST_CASE("static membership through a shared directory: peers appear and leave with their files",
          "[transport][membership]") {
  const std::string dir = "/tmp/strata-static-membership-" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  auto open = [&](const std::string& id, std::vector<std::string> peers) {
    StaticMembershipOptions o;
    o.self = M(id);
    o.peers = std::move(peers);
    o.dir = dir;
    o.poll_interval = std::chrono::milliseconds(10);
    return StaticMembership::OpenInDirectory(std::move(o));
  };
  auto a = open("a", {"b", "c"});
  REQUIRE(a.ok());
  CHECK(Ids((*a)->Members()) == std::vector<std::string>{"a"});  // b has not published yet
  std::vector<std::vector<std::string>> seen;
  std::mutex mu;
  (*a)->SetListener([&](const std::vector<Member>& m) {
    std::lock_guard<std::mutex> lock(mu);
    seen.push_back(Ids(m));
  });
  auto b = open("b", {"a"});
  REQUIRE(b.ok());
  CHECK(Ids((*b)->Members()) == std::vector<std::string>{"a", "b"});
  auto waits = [&](std::vector<std::string> want) {
    for (int i = 0; i < 300; ++i) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (!seen.empty() && seen.back() == want) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  };
  CHECK(waits({"a", "b"}));
  // A file that is not a member record is not a member.
  std::ofstream(dir + "/c.member") << "not json";
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK(Ids((*a)->Members()) == std::vector<std::string>{"a", "b"});
  CHECK((*a)->Check().ok());
  b->reset();  // removes its file
  CHECK_FALSE(std::filesystem::exists(dir + "/b.member"));
  CHECK(waits({"a"}));
  StaticMembershipOptions none;
  none.self = M("x");
  CHECK(StaticMembership::OpenInDirectory(none).status().IsInvalidArgument());
  a->reset();
  std::filesystem::remove_all(dir);
}

// Issue 14 follow-up: under `strata serve`'s umask 077, the static directory's parents that the
// node created were 0700, so nodes of other users could not reach the 0755 directory inside.
TEST_CASE("static membership: every directory it creates is 0755 under umask 077, files 0644",
          "[transport][membership]") {
  namespace fs = std::filesystem;
  const std::string root = "/tmp/strata-static-umask-" + std::to_string(::getpid());
  fs::remove_all(root);
  fs::create_directory(root);
  fs::permissions(root, fs::perms::owner_all);  // an existing directory keeps its mode
  const std::string dir = root + "/a/b/static";
  const mode_t old_umask = ::umask(077);
  StaticMembershipOptions o;
  o.self = M("n1");
  o.dir = dir;
  auto s = StaticMembership::OpenInDirectory(std::move(o));
  ::umask(old_umask);
  REQUIRE(s.ok());
  auto mode = [](const std::string& p) { return fs::status(p).permissions() & fs::perms::all; };
  constexpr auto k0755 = fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                         fs::perms::others_read | fs::perms::others_exec;
  CHECK(mode(root) == fs::perms::owner_all);
  CHECK(mode(root + "/a") == k0755);
  CHECK(mode(root + "/a/b") == k0755);
  CHECK(mode(dir) == k0755);
  CHECK(mode(dir + "/n1.member") == (fs::perms::owner_read | fs::perms::owner_write |
                                     fs::perms::group_read | fs::perms::others_read));
  s->reset();
  fs::remove_all(root);
}

TEST_CASE("member values round-trip - malformed ones are Corruption", "[transport][membership]") {
  auto m = DecodeMemberValue(EncodeMemberValue(M("node-1")));
  REQUIRE(m.ok());
  CHECK(*m == M("node-1"));
  CHECK(DecodeMemberValue("not json").status().IsCorruption());
  CHECK(DecodeMemberValue("{\"id\":\"x\"}").status().IsCorruption());
  CHECK(DecodeMemberValue("{\"id\":\"x\",\"address\":\"###\"}").status().code() ==
        StatusCode::kInvalidArgument);
}

TEST_CASE("etcd membership: join watch clean leave lease expiry of a killed member",
          "[transport][membership][etcd]") {
  testing::EtcdProcess etcd;
  REQUIRE(etcd.ready());
  EtcdMembershipOptions base;
  base.endpoint = etcd.endpoint();
  base.prefix = "/strata-test/members/";
  base.lease_ttl = std::chrono::seconds(2);

  auto opts_a = base;
  opts_a.self = M("a");
  auto a = EtcdMembership::Open(opts_a);
  REQUIRE(a.ok());
  CHECK(Ids((*a)->Members()) == std::vector<std::string>{"a"});

  std::mutex mu;
  std::vector<std::vector<std::string>> changes;
  (*a)->SetListener([&](const std::vector<Member>& m) {
    std::lock_guard<std::mutex> lock(mu);
    changes.push_back(Ids(m));
  });

  {
    auto opts_b = base;
    opts_b.self = M("b");
    auto b = EtcdMembership::Open(opts_b);
    REQUIRE(b.ok());
    CHECK(Ids((*b)->Members()) == std::vector<std::string>{"a", "b"});
    CHECK(WaitFor(std::chrono::seconds(5), [&] { return (*a)->Members().size() == 2; }));
    CHECK((*a)->Members()[1] == M("b"));
    // Keep-alive holds b past several TTLs.
    std::this_thread::sleep_for(std::chrono::milliseconds(4500));
    CHECK(Ids((*a)->Members()) == std::vector<std::string>{"a", "b"});
  }  // b leaves cleanly: its lease is revoked
  CHECK(WaitFor(std::chrono::seconds(3), [&] { return (*a)->Members().size() == 1; }));

  // A malformed value under the prefix is not a member.
  EtcdClient client(etcd.endpoint(), std::chrono::milliseconds(1000));
  REQUIRE(client.Put(base.prefix + "junk", "{not json", 0).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK(Ids((*a)->Members()) == std::vector<std::string>{"a"});

  // A member process that is SIGKILLed leaves within its lease TTL (plus etcd's expiry tick).
  pid_t child = ::fork();
  if (child == 0) {
    auto opts_c = base;
    opts_c.self = M("c");
    auto c = EtcdMembership::Open(opts_c);
    if (!c.ok()) std::_Exit(3);
    ::pause();
    std::_Exit(0);
  }
  REQUIRE(child > 0);
  const bool joined = WaitFor(std::chrono::seconds(5), [&] { return (*a)->Members().size() == 2; });
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  REQUIRE(joined);
  const auto killed_at = Clock::now();
  CHECK(WaitFor(std::chrono::seconds(5), [&] { return (*a)->Members().size() == 1; }));
  const auto gone_after = Clock::now() - killed_at;
  CHECK(gone_after < base.lease_ttl + std::chrono::milliseconds(1500));
  std::lock_guard<std::mutex> lock(mu);
  REQUIRE_FALSE(changes.empty());
  CHECK(changes.back() == std::vector<std::string>{"a"});
}

TEST_CASE("etcd membership fails clearly when etcd is not there", "[transport][membership][etcd]") {
  EtcdMembershipOptions o;
  o.endpoint = "http://127.0.0.1:" + std::to_string(testing::FreeLoopbackPort());
  o.self = M("a");
  o.call_timeout = std::chrono::milliseconds(500);
  auto m = EtcdMembership::Open(o);
  CHECK(m.status().code() == StatusCode::kUnavailable);
}

}  // namespace
}  // namespace strata::transport
