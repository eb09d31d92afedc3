// `strata bench trace`: replays a Mooncake-format trace through the store's eviction policy and
// reports the prefix-hit ratio beside LRU, the offline optimum (Belady) and the infinite cache.
//
// Replay model (docs/store.md, "Eviction"): each line's hash_ids is a chain of 512-token blocks. A
// request hits the longest cached prefix of its chain; then all its blocks are inserted (or
// touched), in chain order, each with its predecessor as parent. While a request is served its
// blocks are in use (pinned), so they are not eviction candidates for that request. The policy
// object is store::MakeEvictionPolicy's, the same code the host and disk tiers run; trace block ids
// map to the policy's dense slots through an id table here, as BlockKeys map to slots in a tier.
//
// Belady evicts the cached block whose next request is furthest in the future (blocks never used
// again first); the infinite cache never evicts. Both are offline references computed in the same
// run.
#include <algorithm>
#include <filesystem>
#include <cmath>
#include <memory>
#include <queue>
#include <tuple>
#include <random>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "bench_report.h"
#include "mooncake_trace.h"
#include "../strata/command_registry.h"
#include "store/eviction_policy.h"

namespace strata::bench {
namespace {

using Chains = std::vector<std::vector<uint64_t>>;

struct Options {
  bool json = false;
  std::string trace = DefaultTracePath();
  uint64_t capacity_blocks = 0;
  double capacity_fraction = 0;
  std::string policy = "prefix";
  bool variants = false;
};

struct Counts {
  uint64_t hit = 0;
  uint64_t requested = 0;
  double Ratio() const { return requested ? static_cast<double>(hit) / requested : 0; }
};

uint64_t UniqueBlocks(const Chains& chains) {
  std::unordered_set<uint64_t> u;
  for (const auto& c : chains) u.insert(c.begin(), c.end());
  return u.size();
}

// Replays `chains` through `policy` with `capacity` slots.
Counts ReplayPolicy(const Chains& chains, store::EvictionPolicy& policy) {
  const uint32_t capacity = policy.capacity();
  std::unordered_map<uint64_t, uint32_t> slot_of;
  slot_of.reserve(capacity * 2);
  std::vector<uint64_t> id_of(capacity);
  std::vector<uint32_t> in_use_epoch(capacity, 0);  // == epoch: the slot belongs to this request
  std::vector<uint32_t> free_slots(capacity);
  for (uint32_t i = 0; i < capacity; ++i) free_slots[i] = capacity - 1 - i;
  Counts counts;
  uint32_t epoch = 0;
  for (const auto& chain : chains) {
    ++epoch;
    size_t k = 0;
    while (k < chain.size() && slot_of.count(chain[k])) ++k;
    counts.hit += k;
    counts.requested += chain.size();
    uint32_t parent = store::kNoSlot;
    for (uint64_t id : chain) {
      auto it = slot_of.find(id);
      if (it != slot_of.end()) {
        policy.OnAccess(it->second);
        in_use_epoch[it->second] = epoch;
        parent = it->second;
        continue;
      }
      if (free_slots.empty()) {
        uint32_t victim =
            policy.PickVictim([&](uint32_t s) { return in_use_epoch[s] != epoch; });
        if (victim == store::kNoSlot) break;  // the request alone fills the cache
        policy.OnRemove(victim);
        slot_of.erase(id_of[victim]);
        free_slots.push_back(victim);
      }
      uint32_t slot = free_slots.back();
      free_slots.pop_back();
      slot_of.emplace(id, slot);
      id_of[slot] = id;
      in_use_epoch[slot] = epoch;
      policy.OnInsert(slot, parent, id * 0x9E3779B97F4A7C15ULL);
      parent = slot;
    }
  }
  return counts;
}

Counts ReplayBelady(const Chains& chains, uint64_t capacity) {
  constexpr uint64_t kNever = UINT64_MAX;
  // next_use[r][j]: index of the next request (after r) whose chain contains chains[r][j].
  std::vector<std::vector<uint64_t>> next_use(chains.size());
  std::unordered_map<uint64_t, uint64_t> upcoming;
  for (size_t r = chains.size(); r-- > 0;) {
    next_use[r].resize(chains[r].size());
    for (size_t j = 0; j < chains[r].size(); ++j) {
      auto it = upcoming.find(chains[r][j]);
      next_use[r][j] = it == upcoming.end() ? kNever : it->second;
    }
    for (uint64_t id : chains[r]) upcoming[id] = r;
  }
  // Ties (blocks whose next use is the same request) break towards the deeper block, so a prefix is
  // never stranded by evicting its head first.
  std::unordered_map<uint64_t, uint64_t> cached;  // id -> next use
  std::priority_queue<std::tuple<uint64_t, size_t, uint64_t>> heap;  // (next use, depth, id), lazy
  Counts counts;
  for (size_t r = 0; r < chains.size(); ++r) {
    const auto& chain = chains[r];
    size_t k = 0;
    while (k < chain.size() && cached.count(chain[k])) ++k;
    counts.hit += k;
    counts.requested += chain.size();
    for (size_t j = 0; j < chain.size(); ++j) {
      cached[chain[j]] = next_use[r][j];
      heap.emplace(next_use[r][j], j, chain[j]);
    }
    while (cached.size() > capacity) {
      auto [nu, depth, id] = heap.top();
      heap.pop();
      auto it = cached.find(id);
      if (it != cached.end() && it->second == nu) cached.erase(it);
    }
  }
  return counts;
}

Counts ReplayInfinite(const Chains& chains) {
  std::unordered_set<uint64_t> seen;
  Counts counts;
  for (const auto& chain : chains) {
    size_t k = 0;
    while (k < chain.size() && seen.count(chain[k])) ++k;
    counts.hit += k;
    counts.requested += chain.size();
    seen.insert(chain.begin(), chain.end());
  }
  return counts;
}

// ---- trace variants, to check that the policy generalises (docs/store.md) ----

// A multi-turn chat service: a few shared system prompts (Zipf), sessions whose every turn resends
// the whole conversation plus a few new blocks; sessions interleave.
Chains SyntheticConversation(uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int kPrompts = 12, kSessions = 3000;
  std::vector<std::vector<uint64_t>> prompts(kPrompts);
  uint64_t next_id = 1;
  for (auto& p : prompts) {
    int len = 2 + static_cast<int>(rng() % 7);
    for (int i = 0; i < len; ++i) p.push_back(next_id++);
  }
  std::vector<double> w(kPrompts);
  for (int i = 0; i < kPrompts; ++i) w[i] = 1.0 / (i + 1);
  std::discrete_distribution<int> pick_prompt(w.begin(), w.end());
  std::geometric_distribution<int> turns(1.0 / 5);    // mean 5 turns
  std::exponential_distribution<double> think(1.0 / 40);  // requests between turns
  struct Event { double t; int session; };
  auto later = [](const Event& a, const Event& b) { return a.t > b.t; };
  std::priority_queue<Event, std::vector<Event>, decltype(later)> q(later);
  std::vector<std::vector<uint64_t>> conv(kSessions);
  std::vector<int> left(kSessions);
  for (int s = 0; s < kSessions; ++s) {
    conv[s] = prompts[pick_prompt(rng)];
    left[s] = 1 + turns(rng);
    q.push({s * 3.0, s});
  }
  Chains out;
  while (!q.empty()) {
    auto [t, s] = q.top();
    q.pop();
    int add = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < add; ++i) conv[s].push_back(next_id++);
    out.push_back(conv[s]);
    if (--left[s] > 0) q.push({t + think(rng), s});
  }
  return out;
}

// Tool-using agents: a handful of long agent prompts (system + tool schemas), tasks that run many
// quick steps, each appending a tool call and its result.
Chains SyntheticAgent(uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int kAgents = 4, kTasks = 600;
  std::vector<std::vector<uint64_t>> agents(kAgents);
  uint64_t next_id = 1;
  for (auto& a : agents) {
    int len = 10 + static_cast<int>(rng() % 20);
    for (int i = 0; i < len; ++i) a.push_back(next_id++);
  }
  std::geometric_distribution<int> steps(1.0 / 10);
  std::exponential_distribution<double> gap(1.0 / 8);
  struct Event { double t; int task; };
  auto later = [](const Event& a, const Event& b) { return a.t > b.t; };
  std::priority_queue<Event, std::vector<Event>, decltype(later)> q(later);
  std::vector<std::vector<uint64_t>> ctx(kTasks);
  std::vector<int> left(kTasks);
  for (int t = 0; t < kTasks; ++t) {
    ctx[t] = agents[rng() % kAgents];
    ctx[t].push_back(next_id++);  // the task statement
    left[t] = 1 + steps(rng);
    q.push({t * 6.0, t});
  }
  Chains out;
  while (!q.empty()) {
    auto [t, k] = q.top();
    q.pop();
    int add = 1 + static_cast<int>(rng() % 3);
    for (int i = 0; i < add; ++i) ctx[k].push_back(next_id++);
    out.push_back(ctx[k]);
    if (--left[k] > 0) q.push({t + gap(rng), k});
  }
  return out;
}

// Coding assistants: repository contexts (Zipf popularity, 8-60 blocks) that are re-sent with a
// new question each time; a context is revised now and then (its tail changes).
Chains SyntheticCoding(uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int kRepos = 300, kRequests = 6000;
  std::vector<std::vector<uint64_t>> repos(kRepos);
  uint64_t next_id = 1;
  for (auto& r : repos) {
    int len = 8 + static_cast<int>(rng() % 53);
    for (int i = 0; i < len; ++i) r.push_back(next_id++);
  }
  std::vector<double> w(kRepos);
  for (int i = 0; i < kRepos; ++i) w[i] = 1.0 / std::pow(i + 1, 0.8);
  std::discrete_distribution<int> pick(w.begin(), w.end());
  Chains out;
  for (int i = 0; i < kRequests; ++i) {
    auto& r = repos[pick(rng)];
    if (rng() % 20 == 0) {  // revision: rewrite the last quarter of the context
      size_t keep = r.size() * 3 / 4;
      r.resize(keep);
      while (r.size() < keep + keep / 3 + 1) r.push_back(next_id++);
    }
    std::vector<uint64_t> chain = r;
    int q = 1 + static_cast<int>(rng() % 3);
    for (int j = 0; j < q; ++j) chain.push_back(next_id++);
    out.push_back(std::move(chain));
  }
  return out;
}

void RunOne(BenchReport& report, const std::string& trace_name, const Chains& chains,
            uint64_t capacity, store::PolicyKind kind) {
  if (capacity == 0 || capacity >= store::kNoSlot) cli::Fail("capacity must be in [1, 2^32-1)");
  store::PolicyOptions popt;
  popt.kind = kind;
  auto policy = store::MakeEvictionPolicy(static_cast<uint32_t>(capacity), popt);
  if (!policy.ok()) cli::Fail(policy.status().ToString());
  store::PolicyOptions lopt;
  lopt.kind = store::PolicyKind::kLru;
  auto lru = store::MakeEvictionPolicy(static_cast<uint32_t>(capacity), lopt);
  if (!lru.ok()) cli::Fail(lru.status().ToString());
  const Counts got = ReplayPolicy(chains, **policy);
  const Counts lru_c = ReplayPolicy(chains, **lru);
  const Counts opt = ReplayBelady(chains, capacity);
  const Counts inf = ReplayInfinite(chains);
  const uint64_t unique = UniqueBlocks(chains);
  nlohmann::json extra = {
      {"trace", trace_name},
      {"policy", std::string(store::PolicyKindName(kind))},
      {"capacity_blocks", capacity},
      {"capacity_fraction", static_cast<double>(capacity) / unique},
      {"unique_blocks", unique},
      {"requests", chains.size()},
      {"requested_blocks", got.requested},
      {"hit_ratio", got.Ratio()},
      {"lru_hit_ratio", lru_c.Ratio()},
      {"belady_hit_ratio", opt.Ratio()},
      {"infinite_hit_ratio", inf.Ratio()},
      {"ratio_to_lru", lru_c.Ratio() > 0 ? got.Ratio() / lru_c.Ratio() : 0},
  };
  report.Add({"trace/" + trace_name + "/capacity=" + std::to_string(capacity), "hit_ratio",
              got.Ratio(), "belady", opt.Ratio(), true, extra});
}

void Run(const Options& opt) {
  auto kind = store::ParsePolicyKind(opt.policy);
  if (!kind.ok()) cli::Fail(kind.status().ToString());
  if (opt.capacity_fraction < 0 || opt.capacity_fraction > 1)
    cli::Fail("--capacity-fraction must be in (0, 1]");
  auto trace = ReadMooncakeTrace(opt.trace);
  if (!trace.ok()) cli::Fail(trace.status().ToString());
  Chains chains;
  chains.reserve(trace->size());
  for (auto& r : *trace) chains.push_back(std::move(r.hash_ids));
  if (chains.empty()) cli::Fail("trace '" + opt.trace + "' has no requests");

  std::vector<std::pair<std::string, Chains>> traces;
  traces.reserve(8);  // `full` below refers into traces[0]
  const std::string base = std::filesystem::path(opt.trace).stem().string();
  traces.emplace_back(base == "mooncake_synthetic_trace" || base == "synthetic_trace" ? "mooncake"
                                                                                       : base,
                      std::move(chains));
  if (opt.variants) {
    const Chains& full = traces[0].second;
    const size_t half = full.size() / 2;
    traces.emplace_back("mooncake_first_half", Chains(full.begin(), full.begin() + half));
    traces.emplace_back("mooncake_second_half", Chains(full.begin() + half, full.end()));
    Chains by_root, every_other;
    for (size_t i = 0; i < full.size(); ++i) {
      if (!full[i].empty() && full[i][0] % 2 == 0) by_root.push_back(full[i]);
      if (i % 2 == 0) every_other.push_back(full[i]);
    }
    traces.emplace_back("mooncake_roots_even", std::move(by_root));
    traces.emplace_back("mooncake_every_other", std::move(every_other));
    traces.emplace_back("synthetic_conversation", SyntheticConversation(1));
    traces.emplace_back("synthetic_agent", SyntheticAgent(2));
    traces.emplace_back("synthetic_coding", SyntheticCoding(3));
  }

  BenchReport report("trace", opt.json);
  for (const auto& [name, c] : traces) {
    const uint64_t unique = UniqueBlocks(c);
    std::vector<uint64_t> capacities;
    if (opt.capacity_blocks > 0) {
      capacities.push_back(opt.capacity_blocks);
    } else if (opt.capacity_fraction > 0) {
      capacities.push_back(std::max<uint64_t>(1, static_cast<uint64_t>(unique * opt.capacity_fraction)));
    } else {
      for (double f : {0.05, 0.10})
        capacities.push_back(std::max<uint64_t>(1, static_cast<uint64_t>(unique * f)));
    }
    for (uint64_t cap : capacities) RunOne(report, name, c, cap, *kind);
  }
}

[[maybe_unused]] const bool kRegistered = cli::RegisterCommand("bench", [](CLI::App& parent) {
  auto opt = std::make_shared<Options>();
  auto* cmd = parent.add_subcommand(
      "trace", "Replay a Mooncake trace through an eviction policy vs LRU, Belady and infinite");
  AddJsonFlag(*cmd, opt->json);
  cmd->add_option("--trace", opt->trace, "Mooncake-format JSONL trace")->capture_default_str();
  auto* blocks = cmd->add_option("--capacity-blocks", opt->capacity_blocks,
                                 "Cache capacity in blocks (default: 5% and 10% of unique blocks)");
  cmd->add_option("--capacity-fraction", opt->capacity_fraction,
                  "Cache capacity as a fraction of the trace's unique blocks")
      ->excludes(blocks);
  cmd->add_option("--policy", opt->policy, "Eviction policy: prefix or lru")->capture_default_str();
  cmd->add_flag("--variants", opt->variants,
                "Also replay derived and synthetic traces (halves, sub-samples, conversation, "
                "agent, coding) to check the policy generalises");
  cmd->callback([opt] { Run(*opt); });
});

}  // namespace
}  // namespace strata::bench
