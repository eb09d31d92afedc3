// Eviction order of the lru and prefix policies (the same objects `strata bench trace` replays).
#include <catch2/catch.hpp>

#include <set>
#include <vector>

#include "store/eviction_policy.h"

namespace strata::store {
namespace {

std::unique_ptr<EvictionPolicy> Make(PolicyKind kind, uint32_t capacity) {
  PolicyOptions o;
  o.kind = kind;
  auto p = MakeEvictionPolicy(capacity, o);
  REQUIRE(p.ok());
  return std::move(p).value();
}

const auto kAll = [](uint32_t) { return true; };

TEST_CASE("policy names parse and bad ones are rejected", "[store]") {
  REQUIRE(ParsePolicyKind("lru").ok());
  REQUIRE(*ParsePolicyKind("prefix") == PolicyKind::kPrefix);
  auto bad = ParsePolicyKind("arc");
  REQUIRE(bad.status().IsInvalidArgument());
  REQUIRE(MakeEvictionPolicy(0).status().IsInvalidArgument());
}

TEST_CASE("lru evicts the least recently used block", "[store]") {
  auto p = Make(PolicyKind::kLru, 4);
  for (uint32_t s = 0; s < 4; ++s) p->OnInsert(s, kNoSlot, s);
  p->OnAccess(0);
  REQUIRE(p->PickVictim(kAll) == 1);
  p->OnRemove(1);
  REQUIRE(p->PickVictim(kAll) == 2);
  // Not evictable (pinned): the next one goes.
  REQUIRE(p->PickVictim([](uint32_t s) { return s != 2; }) == 3);
  REQUIRE(p->PickVictim([](uint32_t) { return false; }) == kNoSlot);
}

TEST_CASE("prefix evicts the tail of a chain before its head (lru does the opposite)", "[store]") {
  for (PolicyKind kind : {PolicyKind::kPrefix, PolicyKind::kLru}) {
    auto p = Make(kind, 8);
    // One request: chain 0 -> 1 -> 2, inserted in chain order.
    p->OnInsert(0, kNoSlot, 100);
    p->OnInsert(1, 0, 101);
    p->OnInsert(2, 1, 102);
    REQUIRE(p->HasChildren(0));
    REQUIRE(p->HasChildren(1));
    REQUIRE_FALSE(p->HasChildren(2));
    const uint32_t v = p->PickVictim(kAll);
    if (kind == PolicyKind::kPrefix) {
      REQUIRE(v == 2);  // the leaf: the prefix 0,1 still hits
      p->OnRemove(2);
      REQUIRE_FALSE(p->HasChildren(1));
      REQUIRE(p->PickVictim(kAll) == 1);
    } else {
      REQUIRE(v == 0);  // LRU strands 1 and 2: no request can hit them any more
    }
  }
}

TEST_CASE("prefix keeps a shared prefix over one-off tails and hit blocks over cold ones",
          "[store]") {
  auto p = Make(PolicyKind::kPrefix, 16);
  // System prompt 0 -> 1, shared by two requests with tails 2 and 3; then a one-off block 4.
  p->OnInsert(0, kNoSlot, 10);
  p->OnInsert(1, 0, 11);
  p->OnInsert(2, 1, 12);
  p->OnAccess(0);
  p->OnAccess(1);
  p->OnInsert(3, 1, 13);
  p->OnInsert(4, kNoSlot, 14);
  std::vector<uint32_t> order;
  for (int i = 0; i < 5; ++i) {
    const uint32_t v = p->PickVictim(kAll);
    REQUIRE(v != kNoSlot);
    order.push_back(v);
    p->OnRemove(v);
  }
  // Tails and the one-off block leave first (in FIFO order), the shared prompt last, tail-first.
  REQUIRE(std::set<uint32_t>(order.begin(), order.begin() + 3) == std::set<uint32_t>{2, 3, 4});
  REQUIRE(order[3] == 1);
  REQUIRE(order[4] == 0);
  REQUIRE(p->PickVictim(kAll) == kNoSlot);
}

TEST_CASE("prefix gives a frequently hit leaf more laps than a cold one", "[store]") {
  auto p = Make(PolicyKind::kPrefix, 8);
  p->OnInsert(0, kNoSlot, 1);
  p->OnInsert(1, kNoSlot, 2);
  p->OnInsert(2, kNoSlot, 3);
  for (int i = 0; i < 3; ++i) p->OnAccess(0);
  REQUIRE(p->PickVictim(kAll) == 1);
  p->OnRemove(1);
  REQUIRE(p->PickVictim(kAll) == 2);
  p->OnRemove(2);
  REQUIRE(p->PickVictim(kAll) == 0);
}

TEST_CASE("prefix skips blocks that are not evictable and still finds one", "[store]") {
  auto p = Make(PolicyKind::kPrefix, 64);
  for (uint32_t s = 0; s < 64; ++s) p->OnInsert(s, s ? s - 1 : kNoSlot, s);
  // Everything is interior except 63; pin 63: an interior block must be returned, never a pinned.
  const uint32_t v = p->PickVictim([](uint32_t s) { return s != 63; });
  REQUIRE(v != kNoSlot);
  REQUIRE(v != 63);
  REQUIRE(p->PickVictim([](uint32_t) { return false; }) == kNoSlot);
  REQUIRE(p->BytesPerSlot() <= 20);
}

}  // namespace
}  // namespace strata::store
