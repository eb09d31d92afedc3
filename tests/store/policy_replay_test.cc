// Every eviction policy on small hand-made traces with hit counts worked out by hand (the
// property each policy is known for), Belady against a brute-force optimum, and the default
// policy's determinism. Replays go through tools/bench/policy_replay.h, the code `strata bench
// trace` runs.
#include <catch2/catch.hpp>

#include <algorithm>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "bench/policy_replay.h"
#include "bench/trace_generators.h"
#include "store/eviction_policy.h"
#include "store/learned_policy.h"
#include "store/tiered_store.h"

namespace strata::bench {
namespace {

using store::PolicyKind;

uint64_t Hits(const Chains& chains, uint64_t capacity, PolicyKind kind) {
  auto r = ReplayPolicy(chains, capacity, kind);
  REQUIRE(r.ok());
  return r->hit;
}

// One single-block request per id.
Chains Singles(std::initializer_list<uint64_t> ids) {
  Chains c;
  for (uint64_t id : ids) c.push_back({id});
  return c;
}

TEST_CASE("every policy kind parses by name and replays", "[store]") {
  const Chains trace = Singles({1, 2, 1, 3, 2, 1});
  for (PolicyKind kind : store::AllPolicyKinds()) {
    INFO(store::PolicyKindName(kind));
    auto parsed = store::ParsePolicyKind(store::PolicyKindName(kind));
    REQUIRE(parsed.ok());
    REQUIRE(*parsed == kind);
    // With room for everything no policy evicts: hits = the infinite cache's.
    REQUIRE(Hits(trace, 8, kind) == ReplayInfinite(trace).hit);
  }
  REQUIRE(store::AllPolicyKinds()[0] == store::kDefaultPolicyKind);
  REQUIRE(store::PolicyOptions{}.kind == store::kDefaultPolicyKind);
}

TEST_CASE("lru, arc and gdsf on hand-made traces", "[store]") {
  // a b a c b, 2 blocks: c evicts b (least recent), so b misses. One hit (a).
  REQUIRE(Hits(Singles({1, 2, 1, 3, 2}), 2, PolicyKind::kLru) == 1);
  // ARC keeps a block seen twice (T2) through a scan of new ones (T1, p = 0):
  // a a x1 x2 x3 a with 3 blocks: x3 evicts x1 (T1's oldest), a hits. LRU evicts a.
  const Chains scan = Singles({1, 1, 11, 12, 13, 1});
  REQUIRE(Hits(scan, 3, PolicyKind::kArc) == 2);
  REQUIRE(Hits(scan, 3, PolicyKind::kLru) == 1);
  // GDSF: a a a b c a with 2 blocks: H(a) = 3, H(b) = 1, so c evicts b (clock L = 1) and a
  // hits; LRU evicts a.
  const Chains freq = Singles({1, 1, 1, 2, 3, 1});
  REQUIRE(Hits(freq, 2, PolicyKind::kGdsf) == 3);
  REQUIRE(Hits(freq, 2, PolicyKind::kLru) == 2);
  // GDSF ages: after the clock passes a's priority, a frequent-long-ago block goes. a a b c d e
  // (H(a) = 2; each victim raises L) then a misses once newer blocks outrank it.
  const Chains aging = Singles({1, 1, 2, 3, 4, 5, 6, 1});
  REQUIRE(Hits(aging, 2, PolicyKind::kGdsf) == 1);
}

TEST_CASE("s3fifo moves a block hit in the small queue to main and drops one-hit wonders",
          "[store]") {
  // 10 blocks: S holds 1 (10%), M 9. a hit once, then 10 new blocks: the first eviction finds a
  // at S's tail with a hit and moves it to M, evicting the next one-hit wonder instead. a hits.
  Chains t = Singles({1, 1});
  for (uint64_t i = 0; i < 10; ++i) t.push_back({100 + i});
  t.push_back({1});
  REQUIRE(Hits(t, 10, PolicyKind::kS3Fifo) == 2);
  REQUIRE(Hits(t, 10, PolicyKind::kLru) == 1);
  // A key evicted from S is remembered in the ghost queue and comes back straight into M.
  Chains g = Singles({1});
  for (uint64_t i = 0; i < 10; ++i) g.push_back({100 + i});  // 1 evicted from S to the ghost
  g.push_back({1});                                          // back, into M
  for (uint64_t i = 0; i < 20; ++i) g.push_back({200 + i});  // new blocks churn through S
  g.push_back({1});
  REQUIRE(Hits(g, 10, PolicyKind::kS3Fifo) == 1);
  REQUIRE(Hits(g, 10, PolicyKind::kLru) == 0);
}

TEST_CASE("wtinylfu does not admit one-hit wonders over frequent blocks", "[store]") {
  // 10 blocks, each read twice; then 5 one-off blocks; then the 10 again. Each one-off is the
  // candidate against probation's oldest (frequency 2) and loses, so 9 of the 10 come back as
  // hits (the window's block lost at the first tie). LRU's cascade misses all 10.
  Chains t;
  for (uint64_t k = 1; k <= 10; ++k) t.insert(t.end(), {{k}, {k}});
  for (uint64_t y = 100; y < 105; ++y) t.push_back({y});
  for (uint64_t k = 1; k <= 10; ++k) t.push_back({k});
  REQUIRE(Hits(t, 10, PolicyKind::kLru) == 10);
  REQUIRE(Hits(t, 10, PolicyKind::kWTinyLfu) == 19);
}

// ---- Belady against the brute-force optimum ----

// The most prefix hits any eviction schedule reaches: after each request the cache keeps any
// subset (of at most `capacity` blocks) of what it held plus the request's blocks.
uint64_t BruteForce(const Chains& chains, uint64_t capacity) {
  std::map<std::pair<size_t, std::set<uint64_t>>, uint64_t> memo;
  std::function<uint64_t(size_t, const std::set<uint64_t>&)> best =
      [&](size_t r, const std::set<uint64_t>& cached) -> uint64_t {
    if (r == chains.size()) return 0;
    auto key = std::make_pair(r, cached);
    if (auto it = memo.find(key); it != memo.end()) return it->second;
    uint64_t hits = 0;
    while (hits < chains[r].size() && cached.count(chains[r][hits])) ++hits;
    std::set<uint64_t> all = cached;
    all.insert(chains[r].begin(), chains[r].end());
    const std::vector<uint64_t> v(all.begin(), all.end());
    uint64_t most = 0;
    const size_t keep = std::min<size_t>(capacity, v.size());
    std::vector<bool> pick(v.size(), false);
    std::fill(pick.begin(), pick.begin() + keep, true);
    do {
      std::set<uint64_t> next;
      for (size_t i = 0; i < v.size(); ++i)
        if (pick[i]) next.insert(v[i]);
      most = std::max(most, best(r + 1, next));
    } while (std::prev_permutation(pick.begin(), pick.end()));
    return memo[key] = hits + most;
  };
  return best(0, {});
}

TEST_CASE("belady matches the brute-force optimum on tiny chained traces", "[store]") {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 60; ++round) {
    // A random prefix tree of 7 blocks; a request is the path from the root to a node.
    std::vector<int> parent(7, -1);
    for (int i = 1; i < 7; ++i) parent[i] = static_cast<int>(rng() % (i + 1)) - 1;
    Chains chains;
    const int requests = 4 + static_cast<int>(rng() % 5);
    for (int r = 0; r < requests; ++r) {
      std::vector<uint64_t> path;
      for (int n = static_cast<int>(rng() % 7); n >= 0; n = parent[n]) path.push_back(n + 1);
      std::reverse(path.begin(), path.end());
      chains.push_back(path);
    }
    for (uint64_t capacity = 1; capacity <= 4; ++capacity) {
      INFO("round " << round << ", capacity " << capacity);
      const uint64_t optimum = BruteForce(chains, capacity);
      REQUIRE(ReplayBelady(chains, capacity).hit == optimum);
      for (PolicyKind kind : store::AllPolicyKinds())
        REQUIRE(Hits(chains, capacity, kind) <= optimum);
    }
  }
}

// ---- the default policy ----

Chains GroupTrace(uint64_t seed, int requests) {
  // Groups resend a chain with the last block changed (the Mooncake trace's shape), some groups
  // often, most once.
  std::mt19937_64 rng(seed);
  std::vector<std::vector<uint64_t>> groups;
  uint64_t next = 1;
  Chains out;
  for (int r = 0; r < requests; ++r) {
    if (groups.empty() || rng() % 3 == 0) {
      std::vector<uint64_t> g;
      const int len = 2 + static_cast<int>(rng() % 12);
      for (int i = 0; i < len; ++i) g.push_back(next++);
      groups.push_back(g);
    }
    std::vector<uint64_t> c = groups[rng() % std::min<size_t>(groups.size(), 1 + rng() % 40)];
    c.push_back(next++);
    out.push_back(c);
  }
  return out;
}

TEST_CASE("learned and regret: the same trace gives the same decisions", "[store]") {
  const Chains trace = GroupTrace(3, 3000);
  const uint64_t unique = UniqueBlocks(trace);
  for (PolicyKind kind : {PolicyKind::kLearned, PolicyKind::kRegret})  // regret's draw: a hash
    for (uint64_t capacity : {unique / 50, unique / 10}) {
      const uint64_t first = Hits(trace, capacity, kind);
      for (int i = 0; i < 3; ++i) REQUIRE(Hits(trace, capacity, kind) == first);
    }
}

TEST_CASE("learned follows the expert ordering that the workload rewards", "[store]") {
  // Coding contexts: Zipf-popular repositories under one-off question tails. Keeping what was
  // reused or stored again soon after an eviction (the fifo and frequency experts) is what pays
  // here: the dead-block and recency orderings alone give 1.05x LRU at 2%, the classic
  // scan-resistant policies 1.4-1.6x; learned must follow the right one to get within 10%.
  const Chains coding = SyntheticCoding(3);
  const uint64_t coding_capacity = UniqueBlocks(coding) / 50;
  const uint64_t lru = Hits(coding, coding_capacity, PolicyKind::kLru);
  const uint64_t arc = Hits(coding, coding_capacity, PolicyKind::kArc);
  const uint64_t learned = Hits(coding, coding_capacity, PolicyKind::kLearned);
  INFO("coding: learned " << learned << " lru " << lru << " arc " << arc);
  REQUIRE(learned >= 1.3 * lru);
  REQUIRE(learned >= 0.9 * arc);
  // Conversations: every turn is reused by the next one a few dozen requests later, so recency is
  // right and protecting only reused blocks costs a fifth of the hits; learned must not follow
  // the coding trace's choice here.
  const Chains conv = SyntheticConversation(1);
  const uint64_t conv_capacity = UniqueBlocks(conv) / 50;
  const uint64_t conv_lru = Hits(conv, conv_capacity, PolicyKind::kLru);
  const uint64_t conv_learned = Hits(conv, conv_capacity, PolicyKind::kLearned);
  INFO("conversation: learned " << conv_learned << " lru " << conv_lru);
  REQUIRE(conv_learned >= 0.95 * conv_lru);
}

TEST_CASE("learned with the arc expert forced reaches ARC on generated traces", "[store]") {
  // The `arc` expert is ARC's ordering (T1 before T2 while T1 exceeds p) run by sampling, with
  // prefix order and the nursery on top, so it does not make ARC's exact decisions; on these
  // traces it is 0.975-1.001 of ARC's hits at 5% and 10% (0.95-1.06 at 2%). Its T2 is "a
  // reference remembered", where a returning key is one the evicted-keys table recalls (ARC's
  // ghost hit).
  for (const auto& [name, trace] : {std::pair<const char*, Chains>{"conversation", SyntheticConversation(1)},
                                    {"agent", SyntheticAgent(2)},
                                    {"coding", SyntheticCoding(3)}}) {
    const uint64_t unique = UniqueBlocks(trace);
    for (uint64_t capacity : {unique / 20, unique / 10}) {
      auto forced = store::MakeLearnedPolicy(static_cast<uint32_t>(capacity),
                                             {store::LearnedLeader::kArc});
      const uint64_t arc_expert = ReplayPolicy(trace, *forced).hit;
      const uint64_t arc = Hits(trace, capacity, PolicyKind::kArc);
      INFO(name << " capacity " << capacity << ": arc expert " << arc_expert << " ARC " << arc);
      REQUIRE(arc_expert >= 0.95 * arc);
    }
  }
  auto leader = store::ParseLearnedLeader("arc");
  REQUIRE(leader.ok());
  REQUIRE(*leader == store::LearnedLeader::kArc);
  REQUIRE_FALSE(store::ParseLearnedLeader("nope").ok());
}

TEST_CASE("learned with the fifo expert forced keeps up with S3-FIFO on coding", "[store]") {
  // Coding contexts are where S3-FIFO is the best classic policy at 5% and 10%. The `fifo` expert
  // is S3-FIFO's ordering run by sampling, with prefix order and the nursery on top. Its main
  // queue gives a lap per reference after the one that brought the block in (S3-FIFO clears a
  // block's frequency when it enters main): with a lap for that first reference too (issue 17's
  // seventh pass) it was 0.968 / 0.983 of S3-FIFO's hits here, with the rule 0.979 / 0.990.
  const Chains coding = SyntheticCoding(3);
  const uint64_t unique = UniqueBlocks(coding);
  for (const auto& [capacity, floor] : {std::pair<uint64_t, double>{unique / 20, 0.975},
                                        {unique / 10, 0.985}}) {
    auto forced = store::MakeLearnedPolicy(static_cast<uint32_t>(capacity),
                                           {store::LearnedLeader::kFifo});
    const uint64_t fifo_expert = ReplayPolicy(coding, *forced).hit;
    const uint64_t s3fifo = Hits(coding, capacity, PolicyKind::kS3Fifo);
    INFO("capacity " << capacity << ": fifo expert " << fifo_expert << " S3-FIFO " << s3fifo);
    REQUIRE(fifo_expert >= floor * s3fifo);
  }
}

TEST_CASE("two-tier replay: demotion through the admission filter, promotion on a disk hit",
          "[store]") {
  // 1 2 1, one host block over one disk block. Admitting everything: 2 evicts 1 from host to
  // disk; the third request finds 1 on disk (a disk hit), promotes it, and host's victim 2 cannot
  // go to disk (its one block, 1, is being read): dropped.
  auto all = ReplayTwoTier(Singles({1, 2, 1}), 1, 1, PolicyKind::kLru, PolicyKind::kLru, 0);
  REQUIRE(all.ok());
  CHECK(all->host_hit == 0);
  CHECK(all->disk_hit == 1);
  CHECK(all->requested == 3);
  CHECK(all->demoted == 1);
  CHECK(all->promoted == 1);
  CHECK(all->rejected == 0);
  // With the store's default filter (seen twice), 1 was seen once when it left host: refused, so
  // the third request misses (and its victim 2, seen once, is refused too).
  auto filtered = ReplayTwoTier(Singles({1, 2, 1}), 1, 1, PolicyKind::kLru, PolicyKind::kLru, 2);
  REQUIRE(filtered.ok());
  CHECK(filtered->disk_hit == 0);
  CHECK(filtered->rejected == 2);
  CHECK(filtered->demoted == 0);
  // 1 1 2 1: seen twice, admitted; the last request is a disk hit.
  auto twice = ReplayTwoTier(Singles({1, 1, 2, 1}), 1, 1, PolicyKind::kLru, PolicyKind::kLru, 2);
  REQUIRE(twice.ok());
  CHECK(twice->host_hit == 1);
  CHECK(twice->disk_hit == 1);
  CHECK(twice->demoted == 1);
  // No hierarchy beats the offline optimum with both tiers' room in one.
  const Chains trace = GroupTrace(5, 2000);
  const uint64_t unique = UniqueBlocks(trace);
  const uint64_t bound = ReplayBelady(trace, unique / 20 + unique / 5).hit;
  for (PolicyKind kind : store::AllPolicyKinds()) {
    INFO(store::PolicyKindName(kind));
    auto got = ReplayTwoTier(trace, unique / 20, unique / 5, kind, kind, 2);
    REQUIRE(got.ok());
    CHECK(got->host_hit + got->disk_hit <= bound);
    CHECK(got->host_hit + got->disk_hit > 0);
  }
  CHECK_FALSE(ReplayTwoTier(trace, 0, 10, PolicyKind::kLru, PolicyKind::kLru, 2).ok());
}

TEST_CASE("two-tier replay: the store's default admission hits more than the seen-twice filter",
          "[store]") {
  // Issue 17, ninth pass: refusing host victims seen once kept from disk the blocks whose next
  // request comes after they left host (a conversation's previous turn, a document's second
  // request), and the disk tier's own policy evicts what is not reused anyway. The default
  // admits every victim; on a conversation trace (host 2%, disk 10%) and on grouped documents
  // (host 5%, disk 20%) that hits more, at the cost of more demotions.
  const uint32_t by_default = store::TieredStoreOptions{}.disk_admission_min_frequency;
  REQUIRE(by_default <= 1);
  const PolicyKind host = PolicyKind::kLearned, disk = store::DiskPolicyFor(host);
  for (const auto& [name, trace, host_frac, disk_frac] :
       {std::tuple<const char*, Chains, uint64_t, uint64_t>{"conversation", SyntheticConversation(1), 50, 10},
        {"grouped documents", GroupTrace(5, 2000), 20, 5}}) {
    INFO(name);
    const uint64_t unique = UniqueBlocks(trace);
    auto all = ReplayTwoTier(trace, unique / host_frac, unique / disk_frac, host, disk, by_default);
    auto twice = ReplayTwoTier(trace, unique / host_frac, unique / disk_frac, host, disk, 2);
    REQUIRE(all.ok());
    REQUIRE(twice.ok());
    INFO("every victim " << all->host_hit + all->disk_hit << " seen twice "
                         << twice->host_hit + twice->disk_hit);
    CHECK(all->rejected == 0);
    CHECK(twice->rejected > 0);
    CHECK(all->demoted > twice->demoted);
    CHECK(all->host_hit + all->disk_hit > twice->host_hit + twice->disk_hit);
  }
}

TEST_CASE("learned evicts a chain's tail before its head and keeps the newest tenth",
          "[store]") {
  PolicyKind kind = PolicyKind::kLearned;
  store::PolicyOptions o;
  o.kind = kind;
  auto made = store::MakeEvictionPolicy(40, o);
  REQUIRE(made.ok());
  store::EvictionPolicy& p = **made;
  // Chain 0-1-...-29 (slot = depth), then 10 single blocks.
  p.OnInsert(0, store::kNoSlot, 1000);
  for (uint32_t s = 1; s < 30; ++s) p.OnInsert(s, s - 1, 1000 + s);
  for (uint32_t s = 30; s < 40; ++s) p.OnInsert(s, store::kNoSlot, 2000 + s);
  std::set<uint32_t> gone;
  auto evictable = [&](uint32_t s) { return !gone.count(s); };
  for (int i = 0; i < 30; ++i) {
    const uint32_t v = p.PickVictim(evictable);
    REQUIRE(v != store::kNoSlot);
    // Never one of the 4 newest (a tenth of 40) while an older block remains.
    if (i < 26) REQUIRE(v < 36);
    // A chain block goes only once every deeper block of the chain is gone.
    if (v < 30)
      for (uint32_t d = v + 1; d < 30; ++d) REQUIRE(gone.count(d));
    p.OnRemove(v);
    gone.insert(v);
  }
}

}  // namespace
}  // namespace strata::bench
