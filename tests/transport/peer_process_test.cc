// The transport layer across real processes on loopback, with a real etcd: nodes register under
// leases, shard the directory by rendezvous hashing, announce what they hold, and pull from each
// other over UCX. Holders are forked child processes (their own UCX context, pool, membership
// and directory), so SIGKILL and SIGSTOP hit a real peer. Children are killed even when a check
// fails (ChildNode's destructor).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>
#include <memory>
#include <random>
#include <set>

#include "etcd_process.h"
#include "strata/key_chain.h"
#include "strata/namespace.h"
#include "transport/directory/directory.h"
#include "transport/directory/transport_peers.h"
#include "transport/membership/etcd_membership.h"
#include "transport/peer_transport.h"
#include "transport/testing/memfd_block_pool.h"
#include "wait_for.h"

namespace strata::transport {
namespace {

using Clock = std::chrono::steady_clock;
using testing::MemfdBlockPool;
using testing::WaitFor;
constexpr char kSecret[] = "process-test-cluster-secret";
constexpr auto kTtl = std::chrono::seconds(2);
constexpr auto kTimeout = std::chrono::milliseconds(2000);

Namespace TestNs() {
  NamespaceSpec spec;
  spec.model_id = "test/process-model";
  spec.num_layers = 4;
  spec.num_kv_heads = 2;
  spec.head_dim = 64;
  return *Namespace::Create(spec);
}

std::vector<BlockKey> Chain(size_t blocks) {
  std::vector<uint32_t> tokens(blocks * 16);
  std::mt19937 rng(2024);
  for (auto& t : tokens) t = rng() % 32000;
  return ComputeBlockKeys(TestNs(), tokens);
}

std::vector<std::byte> Payload(size_t i, size_t n) {
  std::vector<std::byte> p(n);
  std::mt19937_64 rng(1000 + i);
  for (size_t k = 0; k + 8 <= n; k += 8) {
    const uint64_t v = rng();
    std::memcpy(p.data() + k, &v, 8);
  }
  return p;
}

// A node in this process: pool, transport, etcd membership, directory.
struct LocalNode {
  std::unique_ptr<MemfdBlockPool> pool;
  std::unique_ptr<PeerTransport> transport;
  std::unique_ptr<DirectoryShard> shard;
  std::unique_ptr<TransportDirectoryPeers> peers;
  std::unique_ptr<DirectoryClient> directory;
  std::unique_ptr<EtcdMembership> membership;
  std::vector<std::string> applied;

  static std::unique_ptr<LocalNode> Open(const std::string& id, const std::string& etcd,
                                         size_t slots, size_t slot_bytes) {
    auto n = std::make_unique<LocalNode>();
    auto pool = MemfdBlockPool::Open(slots, slot_bytes);
    if (!pool.ok()) return nullptr;
    n->pool = std::move(*pool);
    n->shard = std::make_unique<DirectoryShard>(id);
    PeerTransportOptions o;
    o.node_id = id;
    o.cluster_secret = kSecret;
    o.tls = "tcp";
    o.regions = {n->pool->region()};
    o.request_timeout = kTimeout;
    o.block_source = n->pool.get();
    o.directory = n->shard.get();
    o.pull_coalesce_bytes = uint64_t{4} << 20;  // small blocks several per message
    auto t = PeerTransport::Open(std::move(o));
    if (!t.ok()) return nullptr;
    n->transport = std::move(*t);
    n->peers = std::make_unique<TransportDirectoryPeers>(n->transport.get());
    n->directory = std::make_unique<DirectoryClient>(DirectoryClientOptions{id, 4096},
                                                     n->shard.get(), n->peers.get());
    EtcdMembershipOptions mo;
    mo.endpoint = etcd;
    mo.prefix = "/strata-process-test/members/";
    mo.lease_ttl = kTtl;
    mo.self.id = id;
    mo.self.address = n->transport->worker_address();
    mo.self.host = "localhost";
    auto m = EtcdMembership::Open(mo);
    if (!m.ok()) return nullptr;
    n->membership = std::move(*m);
    return n;
  }

  // Applies the current member list to the directory when it changed.
  void Sync() {
    auto members = membership->Members();
    std::vector<std::string> ids;
    for (const auto& m : members) ids.push_back(m.id);
    if (ids == applied) return;
    peers->SetMembers(members);
    (void)directory->OnMembershipChange(ids);
    applied = ids;
  }
};

// A node in a forked child process that holds `blocks` blocks of `payload` bytes of Chain().
class ChildNode {
 public:
  ChildNode(const std::string& id, const std::string& etcd, size_t blocks, size_t payload) {
    int ready[2], quit[2];
    REQUIRE(::pipe(ready) == 0);
    REQUIRE(::pipe(quit) == 0);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(ready[0]);
      ::close(quit[1]);
      RunChild(id, etcd, blocks, payload, ready[1], quit[0]);
      std::_Exit(0);
    }
    ::close(ready[1]);
    ::close(quit[0]);
    quit_ = quit[1];
    // Ready once registered and announced.
    pollfd p{ready[0], POLLIN, 0};
    char c = 0;
    ok_ = ::poll(&p, 1, 20000) == 1 && ::read(ready[0], &c, 1) == 1 && c == 'r';
    ::close(ready[0]);
  }
  ~ChildNode() { Kill(); }
  bool ok() const { return ok_; }
  pid_t pid() const { return pid_; }
  void Kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    ::close(quit_);
    pid_ = -1;
  }

 private:
  static void RunChild(const std::string& id, const std::string& etcd, size_t blocks,
                       size_t payload, int ready_fd, int quit_fd) {
    auto node = LocalNode::Open(id, etcd, std::max<size_t>(blocks, 1), payload + kBlockHeaderSize);
    if (!node) std::_Exit(2);
    const auto chain = Chain(blocks);
    const Namespace ns = TestNs();
    for (size_t i = 0; i < blocks; ++i) {
      node->pool->Put(i, chain[i], ns.id(), Payload(i, payload));
      node->directory->Added(chain[i]);
    }
    node->Sync();
    (void)node->directory->Flush();
    [[maybe_unused]] ssize_t w = ::write(ready_fd, "r", 1);
    ::close(ready_fd);
    // Serve, following membership, until the parent closes the pipe or kills us.
    while (true) {
      pollfd p{quit_fd, POLLIN, 0};
      if (::poll(&p, 1, 50) != 0) break;
      node->Sync();
      (void)node->directory->Flush();
    }
    node.reset();
  }

  pid_t pid_ = -1;
  int quit_ = -1;
  bool ok_ = false;
};

bool AllHeldBy(LocalNode& c, const std::vector<BlockKey>& chain, const std::string& holder) {
  c.Sync();
  auto h = c.directory->Lookup(chain);
  for (const auto& x : h)
    if (x != std::vector<std::string>{holder}) return false;
  return true;
}

// The worker address that member `id` registered, as `c` sees it; empty if it is not a member.
std::vector<std::byte> AddressOf(LocalNode& c, const std::string& id) {
  for (const auto& m : c.membership->Members())
    if (m.id == id) return m.address;
  return {};
}

// What every test here starts from: a real etcd; node-a, a child holding Chain(blocks) with
// `payload`-byte blocks; with `with_b`, node-b, a child holding nothing; node-c in this process
// with one slot per block. Ready once C sees all of them as members. Members are declared in
// start order, so they stop in reverse (C, B, A, then etcd) however the test ends.
struct PullSetup {
  const size_t blocks, payload, slot_bytes;
  const std::vector<BlockKey> chain;
  testing::EtcdProcess etcd;
  std::unique_ptr<ChildNode> a, b;
  std::unique_ptr<LocalNode> c;

  PullSetup(size_t n_blocks, size_t payload_bytes, bool with_b)
      : blocks(n_blocks),
        payload(payload_bytes),
        slot_bytes(payload_bytes + kBlockHeaderSize),
        chain(Chain(n_blocks)) {
    REQUIRE(etcd.ready());
    a = std::make_unique<ChildNode>("node-a", etcd.endpoint(), blocks, payload);
    REQUIRE(a->ok());
    if (with_b) {
      b = std::make_unique<ChildNode>("node-b", etcd.endpoint(), 0, 4096);
      REQUIRE(b->ok());
    }
    c = LocalNode::Open("node-c", etcd.endpoint(), blocks, slot_bytes);
    REQUIRE(c);
    const size_t members = with_b ? 3 : 2;
    REQUIRE(WaitFor(std::chrono::seconds(30),
                    [&] { return c->membership->Members().size() == members; }));
  }

  // Connects C's transport to node-a at the address A registered.
  void ConnectToA() { REQUIRE(c->transport->Connect("node-a", AddressOf(*c, "node-a")).ok()); }

  // Block i of the chain into C's slot i.
  std::vector<PullTarget> Targets() const {
    std::vector<PullTarget> targets;
    for (size_t i = 0; i < blocks; ++i)
      targets.push_back(PullTarget::Into(chain[i], c->pool->slot(i), slot_bytes));
    return targets;
  }

  // Posts a pull of every block from A, and returns once the first block's bytes have started
  // landing in C's pool (or after 30 s).
  std::unique_ptr<PullOp> PostPullFromA() {
    auto op = c->transport->PreparePull("node-a", TestNs().id(), Targets());
    REQUIRE(op.ok());
    REQUIRE((*op)->Post().ok());
    const std::byte* first = c->pool->slot(0);
    WaitFor(std::chrono::seconds(30),
            [&] { return std::atomic_ref<const std::byte>(first[0]).load() == std::byte{'S'}; });
    return std::move(op).value();
  }

  // True if C's slot i holds A's payload of block i.
  bool SlotMatches(size_t i) const {
    const auto want = Payload(i, payload);
    return std::memcmp(c->pool->slot(i) + kBlockHeaderSize, want.data(), payload) == 0;
  }
};

TEST_CASE(
    "3 nodes and a real etcd: C finds A's 64-block prefix in the directory and pulls it "
    "bit-exact - a joining node moves shards and every block is still found",
    "[transport][etcd][ucx][process]") {
  PullSetup s(64, 64 * 1024, /*with_b=*/true);
  LocalNode& c = *s.c;
  // Shards are spread over the three nodes, and every block is found at A.
  std::set<std::string> owners;
  c.Sync();
  for (const auto& k : s.chain) owners.insert(c.directory->OwnerOf(k));
  CHECK(owners.size() == 3);
  REQUIRE(WaitFor(std::chrono::seconds(30), [&] { return AllHeldBy(c, s.chain, "node-a"); }));

  s.ConnectToA();
  auto r = c.transport->Pull("node-a", TestNs().id(), s.Targets());
  REQUIRE(r.ok());
  CHECK(r->LeadingOk() == s.blocks);
  for (size_t i = 0; i < s.blocks; ++i) {
    INFO("block " << i);
    REQUIRE(s.SlotMatches(i));
    auto h = DecodeBlockHeader(std::span<const std::byte>(c.pool->slot(i), s.slot_bytes));
    REQUIRE(h.ok());
    CHECK(h->key == s.chain[i]);
  }

  // D joins: shards move to it, holders re-announce, lookups still find every block.
  ChildNode d("node-d", s.etcd.endpoint(), 0, 4096);
  REQUIRE(d.ok());
  REQUIRE(WaitFor(std::chrono::seconds(30), [&] { return c.membership->Members().size() == 4; }));
  c.Sync();
  size_t moved_to_d = 0;
  for (const auto& k : s.chain) moved_to_d += c.directory->OwnerOf(k) == "node-d";
  CHECK(moved_to_d > 0);
  CHECK(WaitFor(std::chrono::seconds(30), [&] { return AllHeldBy(c, s.chain, "node-a"); }));
}

TEST_CASE(
    "SIGKILL of the holder mid-transfer: the pull returns within the timeout with a "
    "consistent partial result - the dead node leaves membership and the directory",
    "[transport][etcd][ucx][process]") {
  // 4 MiB blocks, one per data message; 64 KiB blocks, 64 per message (killed mid-message).
  const auto [n_blocks, payload] =
      GENERATE(table<size_t, size_t>({{48, size_t{4} << 20}, {3072, size_t{64} << 10}}));
  INFO(n_blocks << " blocks of " << payload << " bytes");
  PullSetup s(n_blocks, payload, /*with_b=*/true);
  LocalNode& c = *s.c;
  const size_t kBlocks = s.blocks;
  REQUIRE(WaitFor(std::chrono::seconds(30), [&] { return AllHeldBy(c, s.chain, "node-a"); }));
  s.ConnectToA();
  auto op = s.PostPullFromA();  // returns once the first block's bytes have started landing
  s.a->Kill();
  const auto killed = Clock::now();
  PullResult r = op->Wait();
  const auto waited = Clock::now() - killed;
  CHECK(waited <= kTimeout + std::chrono::milliseconds(1000));
  REQUIRE(r.blocks.size() == kBlocks);
  const size_t lead = r.LeadingOk();
  CHECK(lead < kBlocks);  // it died mid-transfer
  // Consistent: every block reported OK is verified and bit-exact; the others are errors.
  for (size_t i = 0; i < kBlocks; ++i) {
    if (!r.blocks[i].ok()) continue;
    INFO("block " << i);
    CHECK(s.SlotMatches(i));
  }
  for (size_t i = lead; i < kBlocks; ++i)
    if (!r.blocks[i].ok()) CHECK_FALSE(r.blocks[i].message().empty());

  // The dead node leaves membership within its lease TTL (plus etcd's expiry tick) ...
  CHECK(WaitFor(kTtl + std::chrono::milliseconds(2500),
                [&] { return c.membership->Members().size() == 2; }));
  // ... and its directory entries stop being returned.
  CHECK(WaitFor(std::chrono::seconds(3), [&] {
    c.Sync();
    for (const auto& h : c.directory->Lookup(s.chain))
      if (!h.empty()) return false;
    return true;
  }));
  // The surviving peer still serves: C can still reach B's directory shard.
  CHECK(c.transport->Connect("node-b", AddressOf(c, "node-b")).ok());
}

TEST_CASE("a stalled holder (SIGSTOP) costs at most the timeout - nothing hangs",
          "[transport][etcd][ucx][process]") {
  PullSetup s(48, 4 << 20, /*with_b=*/false);
  const size_t kBlocks = s.blocks;
  s.ConnectToA();
  auto op = s.PostPullFromA();  // returns once the first block's bytes have started landing
  ::kill(s.a->pid(), SIGSTOP);
  const auto stopped = Clock::now();
  PullResult r = op->Wait();
  const auto waited = Clock::now() - stopped;
  CHECK(waited <= kTimeout + std::chrono::milliseconds(1000));
  size_t timed_out = 0;
  for (size_t i = 0; i < kBlocks; ++i) {
    if (r.blocks[i].ok()) {
      CHECK(s.SlotMatches(i));
    } else {
      timed_out += r.blocks[i].IsTimedOut();
    }
  }
  INFO("leading OK: " << r.LeadingOk() << ", first error: "
                      << (r.LeadingOk() < kBlocks ? r.blocks[r.LeadingOk()].ToString() : "none"));
  CHECK(timed_out > 0);
  s.a->Kill();
}

}  // namespace
}  // namespace strata::transport
