// Tests of a real `strata serve` that need other users than the test's own (issue 14, "Trust
// boundary"; docs/operations.md, "Security"): clients of other uids refused or admitted by
// credentials, socket directories and sockets owned by another uid refused, and tenants: a client
// process of another tenant can neither read nor overwrite a tenant's blocks through any
// descriptor or request it can obtain. Each needs root (setuid in a forked child, chown); without
// it a test prints "SKIPPED: <why>" and exits 77, which ctest reports as skipped
// (SKIP_RETURN_CODE), never as passed.
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "ipc/ipc_protocol.h"
#include "ipc/unix_socket.h"
#include "strata/client.h"
#include "tests/lib/client_test_util.h"
#include "tests/lib/disk_serve.h"
#include "tests/lib/raw_session.h"
#include "tests/lib/run_as.h"
#include "tests/lib/scratch_files.h"
#include "tests/skip.h"
#include "tools/strata/serve_process.h"

namespace strata {
namespace {

using testing::CheckServes;
using testing::Outputs;
using testing::Prompt;
using testing::RawConnect;
using testing::ReadFile;
using testing::ReadResponse;

using testing::RequireRoot;

std::string TestDir(const std::string& name) {
  const std::string d = "/tmp/strata-test-root-" + name + "-" + std::to_string(::getpid());
  std::filesystem::remove_all(d);
  return d;  // the daemon creates it
}

// A `strata serve` (testing::StartPoolServe), its directory and socket then opened to everyone,
// so that only the daemon's own checks stand between another user and it.
std::unique_ptr<cli::ServeProcess> StartServe(const std::string& dir,
                                              std::vector<std::string> extra = {}) {
  auto serve = testing::StartPoolServe(dir, std::move(extra));
  REQUIRE(::chmod(dir.c_str(), 0711) == 0);
  REQUIRE(::chmod(serve->socket().c_str(), 0666) == 0);
  return serve;
}

using testing::RunAs;

TEST_CASE("Daemon: other users are refused by credentials", "[lib][daemon][root]") {
  RequireRoot("connecting as another uid needs root (setuid in a child)");
  const std::string dir = TestDir("creds");
  auto serve = StartServe(dir);
  // uid 65534: refused with PermissionDenied (0), served (1).
  const int rc = RunAs(65534, [&] {
    const int fd = RawConnect(serve->socket());
    if (fd < 0) return 4;
    auto r = ReadResponse(fd);
    return r.ok() && r->status.code() == StatusCode::kPermissionDenied ? 0 : 1;
  });
  CHECK(rc == 0);
  CHECK_THAT(ReadFile(dir + ".log"), Catch::Contains("refused client pid"));
  CheckServes(serve->socket());
  std::filesystem::remove_all(dir);
}

TEST_CASE("Daemon: an allowed uid connects and a pre-existing socket directory of another uid is "
          "refused",
          "[lib][daemon][root]") {
  RequireRoot("needs root (setuid in a child, chown of a directory)");
  const std::string dir = TestDir("allowed");
  auto serve = StartServe(dir, {"--allow-uid", "65534"});
  const int rc = RunAs(65534, [&] {
    const int fd = RawConnect(serve->socket());
    if (fd < 0) return 4;
    ipc::Request stats;
    stats.id = 7;
    stats.body = ipc::StatsRequest{};
    ipc::UnixConnection conn(fd);
    if (!conn.Send(ipc::EncodeRequest(stats)).ok()) return 5;
    auto r = ReadResponse(conn.fd());  // served: the answer is to request 7 (Hello first, it says)
    return r.ok() && r->id == 7 && r->status.code() != StatusCode::kPermissionDenied ? 0 : 1;
  });
  CHECK(rc == 0);
  serve.reset();

  // Someone else pre-created the directory: the daemon refuses to put its socket there.
  const std::string theirs = TestDir("theirs");
  REQUIRE(::mkdir(theirs.c_str(), 0755) == 0);
  REQUIRE(::chown(theirs.c_str(), 65534, 65534) == 0);
  cli::ServeOptions o;
  o.exe = STRATA_CLI_PATH;
  o.socket = theirs + "/s.sock";
  o.args = {"serve", "--socket", o.socket, "--no-disk", "--host-pool", "64MiB"};
  o.log_file = theirs + ".log";
  auto refused = cli::SpawnServe(std::move(o));
  CHECK_FALSE(refused.ok());
  CHECK_THAT(ReadFile(theirs + ".log"), Catch::Contains("owned by uid 65534"));
  std::filesystem::remove_all(dir);
  std::filesystem::remove_all(theirs);
}

TEST_CASE("A socket directory or a socket owned by another uid is refused", "[lib][root]") {
  RequireRoot("a directory or socket owned by another uid needs root to create");
  const std::string root = TestDir("owners");
  REQUIRE(ipc::PrepareSocketDirectory(root + "/s.sock").ok());
  // Owned by another user (as a pre-created /tmp/strata-<uid> would be).
  REQUIRE(::mkdir((root + "/theirs").c_str(), 0700) == 0);
  REQUIRE(::chown((root + "/theirs").c_str(), 65534, 65534) == 0);
  Status dir_status = ipc::PrepareSocketDirectory(root + "/theirs/strata.sock");
  CHECK(dir_status.code() == StatusCode::kPermissionDenied);
  CHECK_THAT(dir_status.ToString(), Catch::Contains("owned by uid 65534"));
  // Another user's socket, as one pre-created to capture stored KV would be.
  const std::string path = root + "/s.sock";
  auto listener = ipc::UnixListener::Listen(path, 0600);
  REQUIRE(listener.ok());
  REQUIRE(::lchown(path.c_str(), 65534, 65534) == 0);
  Status sock_status = ipc::CheckDaemonSocketOwner(path);
  CHECK(sock_status.code() == StatusCode::kPermissionDenied);
  CHECK_THAT(sock_status.ToString(), Catch::Contains("owned by uid 65534"));
  std::filesystem::remove_all(root);
}

TEST_CASE("A daemon socket of another uid is trusted when the client names that user "
          "(ClientOptions::trusted_daemon_uids, STRATA_DAEMON_USER)",
          "[lib][daemon][root]") {
  RequireRoot("a socket owned by another uid needs root to create");
  // The systemd unit runs the daemon as its own user (`strata`); engines of other users must be
  // able to trust that user and no other. Here the socket and its directory belong to nobody.
  const std::string dir = TestDir("service-user");
  auto serve = StartServe(dir);
  REQUIRE(::lchown(serve->socket().c_str(), 65534, 65534) == 0);
  REQUIRE(::chown(dir.c_str(), 65534, 65534) == 0);
  ::unsetenv("STRATA_DAEMON_USER");

  auto refused = Client::Connect(serve->socket());
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == StatusCode::kPermissionDenied);
  CHECK_THAT(refused.status().ToString(), Catch::Contains("STRATA_DAEMON_USER"));

  ClientOptions trusting;
  trusting.trusted_daemon_uids = {65534};
  CheckServes(serve->socket(), trusting);

  // By name or uid in the environment; another user is still refused, an unknown name is an error.
  const char* nobody = ::getpwuid(65534) != nullptr ? ::getpwuid(65534)->pw_name : "65534";
  ::setenv("STRATA_DAEMON_USER", nobody, 1);
  CheckServes(serve->socket(), ClientOptions{});
  ::setenv("STRATA_DAEMON_USER", "12345", 1);
  CHECK(Client::Connect(serve->socket()).status().code() == StatusCode::kPermissionDenied);
  ::setenv("STRATA_DAEMON_USER", "no-such-user-strata-test", 1);
  auto unknown = Client::Connect(serve->socket());
  CHECK(unknown.status().IsInvalidArgument());
  CHECK_THAT(unknown.status().ToString(), Catch::Contains("no-such-user-strata-test"));
  ::unsetenv("STRATA_DAEMON_USER");
  serve.reset();
  std::filesystem::remove_all(dir);
}

// ---- Tenants ----

constexpr uid_t kUidA = 12001, kUidB = 12002;
constexpr size_t kBlockBytes = 65536;
constexpr size_t kBlocks = 8;

Namespace TenantNamespace(const std::string& salt) {
  return testing::SmallNamespace("test/tenant-model", kBlockBytes, salt);
}

// Tenant A's prompt: every process computes the same keys and bytes from the seed.
Prompt PromptA() { return Prompt(TenantNamespace("tenant-a"), kBlocks, 7, kBlockBytes); }

// A process of tenant A: 0 when its Load returns exactly A's blocks (after storing them first
// with `store`).
int LoadAsA(const std::string& socket, bool store) {
  auto c = Client::Connect(socket);
  if (!c.ok()) return 10;
  const Namespace ns = TenantNamespace("tenant-a");
  const Prompt p = PromptA();
  if (store) {
    auto n = (*c)->Store(ns, p.keys, p.in).Wait();
    if (!n.ok() || *n != kBlocks) return 11;
  }
  Outputs o(kBlocks, kBlockBytes);
  auto loaded = (*c)->Load(ns, p.keys, o.out).Wait();
  if (!loaded.ok() || *loaded != kBlocks) return 12;
  for (size_t i = 0; i < kBlocks; ++i)
    if (o.bufs[i] != p.blocks[i]) return 13;
  return 0;
}

// A raw session speaking the protocol itself, as a hostile client would: Hello with a sealed
// staging memfd, then any request.
class RawSession {
 public:
  explicit RawSession(const std::string& socket) : conn_(RawConnect(socket)) {}
  bool Hello(uint64_t* pool_bytes, uint64_t* slab_bytes) {
    staging_ = ::memfd_create("hostile-staging", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (staging_ < 0 || ::ftruncate(staging_, kStaging) != 0 ||
        ::fcntl(staging_, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0)
      return false;
    ipc::Hello h;
    h.staging_bytes = kStaging;
    auto r = Call(h, staging_);
    const auto* hr = r.ok() ? std::get_if<ipc::HelloReply>(&r->body) : nullptr;
    if (hr == nullptr || !r->status.ok()) return false;
    *pool_bytes = hr->pool_bytes;
    *slab_bytes = hr->slab_bytes;
    return true;
  }
  Result<ipc::Response> Call(ipc::RequestBody body, int pass_fd = -1, int* received_fd = nullptr) {
    ipc::Request req{++id_, std::move(body)};
    STRATA_RETURN_IF_ERROR(conn_.Send(ipc::EncodeRequest(req), pass_fd));
    return ReadResponse(conn_.fd(), received_fd);
  }
  StatusCode Code(ipc::RequestBody body) {
    auto r = Call(std::move(body));
    return r.ok() ? r->status.code() : StatusCode::kInternal;
  }
  int staging() const { return staging_; }
  static constexpr uint64_t kStaging = 1 << 20;

 private:
  ipc::UnixConnection conn_;
  int staging_ = -1;
  uint64_t id_ = 0;
};

// Tenant B's process, attacking A's blocks through the client library and the raw protocol.
// Returns 0 when every attempt failed as it must, else the number of the attempt that did not.
int AttackAsB(const std::string& socket) {
  const Namespace ns_a = TenantNamespace("tenant-a");
  const Namespace ns_b = TenantNamespace("tenant-b");
  const Prompt a = PromptA();
  // 1. The client library: A's namespace cannot be opened, so nothing of it is looked up,
  //    loaded, stored or cleared.
  {
    auto c = Client::Connect(socket);
    if (!c.ok()) return 1;
    Outputs o(kBlocks, kBlockBytes);
    auto loaded = (*c)->Load(ns_a, a.keys, o.out).Wait();
    if (loaded.ok() || loaded.status().code() != StatusCode::kPermissionDenied) return 2;
    auto stored = (*c)->Store(ns_a, a.keys, a.in).Wait();
    if (stored.ok() || stored.status().code() != StatusCode::kPermissionDenied) return 3;
    if ((*c)->Clear(ns_a.id()).status().code() != StatusCode::kPermissionDenied) return 4;
    // Its own namespace with A's keys (as if it knew A's tokens and salt): the keys carry A's
    // namespace tag, so the store is refused (docs/keys.md, "Namespace tag"), and what it loads
    // back under its namespace is nothing.
    std::vector<std::vector<std::byte>> forged(kBlocks, std::vector<std::byte>(kBlockBytes,
                                                                                std::byte{0x5a}));
    std::vector<ConstBuffer> in;
    for (auto& f : forged) in.push_back({f.data(), f.size()});
    auto n = (*c)->Store(ns_b, a.keys, in).Wait();
    if (n.ok() || !n.status().IsInvalidArgument()) return 5;
    auto mine = (*c)->Load(ns_b, a.keys, o.out).Wait();
    if (!mine.ok() || *mine != 0) return 6;
  }
  // 2. The raw protocol, with A's namespace id, which another process of A opened.
  RawSession s(socket);
  uint64_t pool_bytes = 0, slab_bytes = 0;
  if (!s.Hello(&pool_bytes, &slab_bytes) || slab_bytes == 0) return 20;
  if (s.Code(ipc::OpenNamespaceRequest{ns_a.encoding()}) != StatusCode::kPermissionDenied)
    return 21;
  if (s.Code(ipc::LoadRequest{ns_a.id(), a.keys, 0}) != StatusCode::kPermissionDenied) return 22;
  if (s.Code(ipc::StoreBeginRequest{ns_a.id(), a.keys, {}}) != StatusCode::kPermissionDenied)
    return 23;
  ipc::StoreCommitRequest commit;
  commit.ns = ns_a.id();
  commit.keys = {a.keys[0]};
  commit.parents = {BlockKey{}};
  commit.staging_offsets = {0};
  commit.lengths = {kBlockBytes};
  if (s.Code(commit) != StatusCode::kPermissionDenied) return 24;
  if (s.Code(ipc::LookupRequest{a.keys, ns_a.id()}) != StatusCode::kPermissionDenied) return 25;
  if (s.Code(ipc::ClearRequest{ns_a.id()}) != StatusCode::kPermissionDenied) return 26;
  if (s.Code(ipc::ClearRequest{std::nullopt}) != StatusCode::kPermissionDenied) return 27;
  // `strata inspect` of A's namespace: its blocks, one of its keys, its prefix (with A's spec,
  // or with B's spec and A's id) are A's to see.
  ipc::InspectRequest ls;
  ls.command = "ls";
  ls.ns = ns_a.id();
  if (s.Code(ls) != StatusCode::kPermissionDenied) return 40;
  ipc::InspectRequest key;
  key.command = "key";
  key.ns = ns_a.id();
  key.keys = {a.keys[0]};
  if (s.Code(key) != StatusCode::kPermissionDenied) return 41;
  ipc::InspectRequest prefix;
  prefix.command = "prefix";
  prefix.ns = ns_a.id();
  prefix.keys = a.keys;
  prefix.spec = ns_a.spec();
  if (s.Code(prefix) != StatusCode::kPermissionDenied) return 42;
  prefix.spec = ns_b.spec();
  if (s.Code(prefix) != StatusCode::kPermissionDenied) return 43;
  ls.ns = ns_b.id();  // its own namespace: allowed once opened
  if (s.Code(ipc::OpenNamespaceRequest{ns_b.encoding()}) != StatusCode::kOk) return 44;
  if (s.Code(ls) != StatusCode::kOk) return 45;
  // 3. Every slab of the pool: A's are refused; those handed out hold none of A's bytes and
  //    cannot be written, remapped writable or resized.
  const uint64_t slabs = pool_bytes / slab_bytes;
  uint64_t granted = 0, refused = 0;
  for (uint32_t i = 0; i < slabs; ++i) {
    int fd = -1;
    auto r = s.Call(ipc::MapSlabRequest{i}, -1, &fd);
    if (!r.ok()) return 30;
    if (r->status.code() == StatusCode::kPermissionDenied) {
      ++refused;
      if (fd >= 0) return 31;
      continue;
    }
    if (!r->status.ok() || fd < 0) return 32;
    ++granted;
    if (::mmap(nullptr, slab_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) != MAP_FAILED)
      return 33;
    if (::ftruncate(fd, 4096) == 0) return 34;
    void* m = ::mmap(nullptr, slab_bytes, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) return 35;
    if (::mprotect(m, slab_bytes, PROT_READ | PROT_WRITE) == 0) return 36;
    const auto* bytes = static_cast<const std::byte*>(m);
    for (uint64_t off = 0; off + 64 <= slab_bytes; off += 4096)
      for (const auto& block : a.blocks)
        if (std::memcmp(bytes + off, block.data(), 64) == 0) return 37;
    ::munmap(m, slab_bytes);
    ::close(fd);
  }
  if (refused == 0 || granted == 0) return 38;
  return 0;
}

TEST_CASE("Tenants: a client process of another tenant can neither read nor overwrite a "
          "tenant's blocks through any descriptor it can obtain",
          "[lib][daemon][root][tenant]") {
  RequireRoot("clients of two tenants need two uids (setuid in a child)");
  const std::string dir = TestDir("tenants");
  auto serve = StartServe(
      dir, {"--allow-uid", std::to_string(kUidA), "--allow-uid", std::to_string(kUidB),
            "--tenant-uid", "tenant-a:" + std::to_string(kUidA), "--tenant-uid",
            "tenant-b:" + std::to_string(kUidB)});
  const std::string socket = serve->socket();
  // A stores 8 blocks and loads them back.
  REQUIRE(RunAs(kUidA, [&] { return LoadAsA(socket, /*store=*/true); }) == 0);
  // B tries everything; every attempt fails.
  const int attack = RunAs(kUidB, [&] { return AttackAsB(socket); });
  INFO("attempt " << attack << " did not fail as it must\n" << ReadFile(dir + ".log"));
  CHECK(attack == 0);
  // A's loads stay bit-exact, in a new process of A.
  CHECK(RunAs(kUidA, [&] { return LoadAsA(socket, /*store=*/false); }) == 0);
  // The daemon (root, an admin) is not what the tenants see: the log names B's refused slabs.
  CHECK_THAT(ReadFile(dir + ".log"), Catch::Contains("holds blocks of a tenant"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace strata
