// Directory: the rendezvous sharding math, shard moves on join/leave, the shard's bookkeeping,
// and (with UCX) holders announcing to and looking up from shard owners over real transports.
#include "transport/directory/directory.h"

#include <catch2/catch.hpp>
#include <map>
#include <random>

#include "transport/directory/rendezvous.h"
#ifdef STRATA_HAVE_UCX
#include "transport/directory/transport_peers.h"
#include "transport/peer_transport.h"
#endif

namespace strata::transport {
namespace {

std::vector<BlockKey> RandomKeys(size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<BlockKey> k(n);
  for (auto& x : k) x = BlockKey{rng(), rng()};
  return k;
}

TEST_CASE("rendezvous owners are deterministic and balanced", "[transport][directory]") {
  const std::vector<std::string> members = {"node-a", "node-b", "node-c"};
  const auto keys = RandomKeys(30000, 1);
  std::map<std::string, size_t> count;
  for (const auto& k : keys) {
    const std::string o = RendezvousOwner(k, members);
    CHECK(o == RendezvousOwner(k, {"node-c", "node-a", "node-b"}));  // order does not matter
    ++count[o];
  }
  for (const auto& m : members) {
    INFO(m << " owns " << count[m]);
    CHECK(count[m] > 30000 * 0.28);
    CHECK(count[m] < 30000 * 0.39);
  }
  CHECK(RendezvousOwner(keys[0], {}).empty());
  CHECK(RendezvousScore(keys[0], "x") == RendezvousScore(keys[0], "x"));
  CHECK(RendezvousScore(keys[0], "x") != RendezvousScore(keys[0], "y"));
}

TEST_CASE("a join moves only keys to the new member - a leave only the leaver's keys",
          "[transport][directory]") {
  const std::vector<std::string> three = {"a", "b", "c"};
  const std::vector<std::string> four = {"a", "b", "c", "d"};
  const auto keys = RandomKeys(20000, 2);
  size_t moved = 0;
  for (const auto& k : keys) {
    const auto before = RendezvousOwner(k, three);
    const auto after = RendezvousOwner(k, four);
    if (before != after) {
      ++moved;
      CHECK(after == "d");
    }
  }
  CHECK(moved > 20000 * 0.20);
  CHECK(moved < 20000 * 0.30);
  const std::vector<std::string> two = {"a", "c"};
  for (const auto& k : keys) {
    const auto before = RendezvousOwner(k, three);
    if (before != "b") CHECK(RendezvousOwner(k, two) == before);
  }
}

TEST_CASE("a shard records holders evictions and replacements and forgets the dead",
          "[transport][directory]") {
  DirectoryShard shard("a");
  const auto keys = RandomKeys(4, 3);
  shard.OnMembershipChange({"a"});
  // Keys owned by "a" when it is alone: all of them.
  CHECK(shard.Announce({1, "x", {keys[0]}, {}, false, {}}).code() ==
        StatusCode::kUnavailable);  // x is not a member
  shard.OnMembershipChange({"a", "x", "y"});
  std::vector<BlockKey> mine;
  for (const auto& k : RandomKeys(200, 4))
    if (RendezvousOwner(k, {"a", "x", "y"}) == "a") mine.push_back(k);
  REQUIRE(mine.size() > 10);
  REQUIRE(shard.Announce({1, "x", {mine[0], mine[1]}, {}, false, {}}).ok());
  REQUIRE(shard.Announce({2, "y", {mine[1], mine[2]}, {}, false, {}}).ok());
  auto r = shard.Lookup({7, {mine[0], mine[1], mine[2], mine[3]}, {}});
  CHECK(r.request_id == 7);
  CHECK(r.holders[0] == std::vector<std::string>{"x"});
  CHECK(r.holders[1] == std::vector<std::string>{"x", "y"});
  CHECK(r.holders[2] == std::vector<std::string>{"y"});
  CHECK(r.holders[3].empty());
  REQUIRE(shard.Announce({3, "x", {}, {mine[1]}, false, {}}).ok());
  CHECK(shard.Lookup({8, {mine[1]}, {}}).holders[0] == std::vector<std::string>{"y"});
  REQUIRE(shard.Announce({4, "y", {mine[3]}, {}, true, {}}).ok());  // replace: y holds only mine[3]
  r = shard.Lookup({9, {mine[1], mine[2], mine[3]}, {}});
  CHECK(r.holders[0].empty());
  CHECK(r.holders[1].empty());
  CHECK(r.holders[2] == std::vector<std::string>{"y"});
  // y dies: its entries stop being returned.
  shard.OnMembershipChange({"a", "x"});
  CHECK(shard.Lookup({10, {mine[3]}, {}}).holders[0].empty());
  CHECK(shard.Lookup({11, {mine[0]}, {}}).holders[0] == std::vector<std::string>{"x"});
  CHECK(shard.Announce({5, "", {}, {}, false, {}}).IsInvalidArgument());
}

#ifdef STRATA_HAVE_UCX
struct DirNode {
  std::unique_ptr<DirectoryShard> shard;
  std::unique_ptr<PeerTransport> transport;
  std::unique_ptr<TransportDirectoryPeers> peers;
  std::unique_ptr<DirectoryClient> client;
};

DirNode MakeDirNode(const std::string& id) {
  DirNode n;
  n.shard = std::make_unique<DirectoryShard>(id);
  PeerTransportOptions o;
  o.node_id = id;
  o.cluster_secret = "directory-test-secret-0123";
  o.directory = n.shard.get();
  auto t = PeerTransport::Open(std::move(o));
  REQUIRE(t.ok());
  n.transport = std::move(*t);
  n.peers = std::make_unique<TransportDirectoryPeers>(n.transport.get());
  n.client = std::make_unique<DirectoryClient>(DirectoryClientOptions{id, 64}, n.shard.get(),
                                               n.peers.get());
  return n;
}

void SetMembers(std::map<std::string, DirNode*>& nodes) {
  std::vector<Member> members;
  std::vector<std::string> ids;
  for (auto& [id, n] : nodes) {
    Member m;
    m.id = id;
    m.address = n->transport->worker_address();
    m.host = "localhost";
    members.push_back(m);
    ids.push_back(id);
  }
  for (auto& [id, n] : nodes) n->peers->SetMembers(members);
  for (auto& [id, n] : nodes) {
    Status st = n->client->OnMembershipChange(ids);
    INFO(st.ToString());
    REQUIRE(st.ok());
  }
}

TEST_CASE("holders announce to shard owners over UCX - joins move shards - the dead drop out",
          "[transport][directory][ucx]") {
  DirNode a = MakeDirNode("a"), b = MakeDirNode("b"), c = MakeDirNode("c");
  std::map<std::string, DirNode*> nodes = {{"a", &a}, {"b", &b}, {"c", &c}};
  SetMembers(nodes);
  const auto chain_a = RandomKeys(64, 10);  // held by a
  const auto chain_b = RandomKeys(64, 11);  // held by b
  for (const auto& k : chain_a) a.client->Added(k);
  for (const auto& k : chain_b) b.client->Added(k);
  Status fa = a.client->Flush();
  INFO(fa.ToString());
  REQUIRE(fa.ok());
  REQUIRE(b.client->Flush().ok());
  // The shards are spread: every node owns some of a's keys.
  std::map<std::string, int> owners;
  for (const auto& k : chain_a) ++owners[a.client->OwnerOf(k)];
  CHECK(owners.size() == 3);

  auto check_all = [](DirNode& from, const std::vector<BlockKey>& chain,
                      const std::string& holder) {
    auto h = from.client->Lookup(chain);
    REQUIRE(h.size() == chain.size());
    for (size_t i = 0; i < h.size(); ++i) {
      INFO("block " << i);
      CHECK(h[i] == std::vector<std::string>{holder});
    }
  };
  check_all(c, chain_a, "a");
  check_all(c, chain_b, "b");

  // Evictions reach the owners.
  a.client->Evicted(chain_a[5]);
  REQUIRE(a.client->Flush().ok());
  CHECK(c.client->Lookup({chain_a[5]})[0].empty());
  a.client->Added(chain_a[5]);
  REQUIRE(a.client->Flush().ok());

  // d joins: shards move, holders re-announce, every block is still found.
  DirNode d = MakeDirNode("d");
  nodes["d"] = &d;
  SetMembers(nodes);
  size_t owned_by_d = 0;
  for (const auto& k : chain_a) owned_by_d += d.client->OwnerOf(k) == "d";
  CHECK(owned_by_d > 0);
  check_all(d, chain_a, "a");
  check_all(c, chain_b, "b");

  // b leaves (its lease expired): its blocks are no longer returned by anyone.
  nodes.erase("b");
  SetMembers(nodes);
  for (const auto& h : c.client->Lookup(chain_b)) CHECK(h.empty());
  check_all(d, chain_a, "a");
}
#endif

}  // namespace
}  // namespace strata::transport
