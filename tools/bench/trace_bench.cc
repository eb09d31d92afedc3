// `strata bench trace`: replays a Mooncake-format trace through the store's eviction policies (the
// default, `learned`, and the classic ones: lru, arc, s3fifo, wtinylfu, gdsf, and the previous
// default `prefix`) and reports each one's prefix-hit ratio against the offline optimum (Belady),
// with LRU and the infinite cache, all in the same run.
//
// Each line's hash_ids is a chain of 512-token blocks, replayed by policy_replay.h (its replay
// model, Belady and the infinite cache are described there), all in the same run.
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
#include "policy_replay.h"
#include "../strata/command_registry.h"
#include "store/eviction_policy.h"

namespace strata::bench {
namespace {

struct Options {
  bool json = false;
  std::string trace = DefaultTracePath();
  uint64_t capacity_blocks = 0;
  std::vector<double> capacity_fractions = {0.02, 0.05, 0.10, 0.25};
  std::string policy = "all";
  bool variants = false;
};

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

// One trace at one capacity: every policy of `kinds`, Belady and the infinite cache, in the same
// run. One line per policy, with the offline optimum as baseline (ratio = fraction of Belady).
void RunCapacity(BenchReport& report, const std::string& trace_name, const Chains& chains,
                 uint64_t capacity, const std::vector<store::PolicyKind>& kinds) {
  auto lru_c = ReplayPolicy(chains, capacity, store::PolicyKind::kLru);
  if (!lru_c.ok()) cli::Fail(lru_c.status().ToString());
  const ReplayCounts opt = ReplayBelady(chains, capacity);
  const ReplayCounts inf = ReplayInfinite(chains);
  const uint64_t unique = UniqueBlocks(chains);
  const std::string base_case = "trace/" + trace_name + "/capacity=" + std::to_string(capacity);
  auto add = [&](const std::string& policy, const ReplayCounts& got) {
    nlohmann::json extra = {
        {"trace", trace_name},
        {"policy", policy},
        {"capacity_blocks", capacity},
        {"capacity_fraction", static_cast<double>(capacity) / unique},
        {"unique_blocks", unique},
        {"requests", chains.size()},
        {"requested_blocks", got.requested},
        {"hit_ratio", got.Ratio()},
        {"lru_hit_ratio", lru_c->Ratio()},
        {"belady_hit_ratio", opt.Ratio()},
        {"infinite_hit_ratio", inf.Ratio()},
        {"ratio_to_lru", lru_c->Ratio() > 0 ? got.Ratio() / lru_c->Ratio() : 0},
    };
    report.Add({base_case + "/policy=" + policy, "hit_ratio", got.Ratio(), "belady", opt.Ratio(),
                true, extra});
  };
  for (store::PolicyKind kind : kinds) {
    auto got = kind == store::PolicyKind::kLru ? lru_c : ReplayPolicy(chains, capacity, kind);
    if (!got.ok()) cli::Fail(got.status().ToString());
    add(std::string(store::PolicyKindName(kind)), *got);
  }
  if (kinds.size() > 1) {
    add("belady", opt);
    add("infinite", inf);
  }
}

void Run(const Options& opt) {
  std::vector<store::PolicyKind> kinds;
  if (opt.policy.empty() || opt.policy == "all") {
    kinds.assign(store::AllPolicyKinds().begin(), store::AllPolicyKinds().end());
  } else {
    for (size_t at = 0; at <= opt.policy.size();) {
      size_t comma = opt.policy.find(',', at);
      if (comma == std::string::npos) comma = opt.policy.size();
      auto kind = store::ParsePolicyKind(opt.policy.substr(at, comma - at));
      if (!kind.ok()) cli::Fail(kind.status().ToString());
      kinds.push_back(*kind);
      at = comma + 1;
    }
  }
  for (double f : opt.capacity_fractions)
    if (!(f > 0 && f <= 1)) cli::Fail("--capacity-fraction values must be in (0, 1]");
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
    } else {
      for (double f : opt.capacity_fractions)
        capacities.push_back(std::max<uint64_t>(1, static_cast<uint64_t>(unique * f)));
    }
    for (uint64_t cap : capacities) RunCapacity(report, name, c, cap, kinds);
  }
}

[[maybe_unused]] const bool kRegistered = cli::RegisterCommand("bench", [](CLI::App& parent) {
  auto opt = std::make_shared<Options>();
  auto* cmd = parent.add_subcommand(
      "trace", "Replay a Mooncake trace through an eviction policy vs LRU, Belady and infinite");
  AddJsonFlag(*cmd, opt->json);
  cmd->add_option("--trace", opt->trace, "Mooncake-format JSONL trace")->capture_default_str();
  auto* blocks = cmd->add_option("--capacity-blocks", opt->capacity_blocks,
                                 "Cache capacity in blocks (instead of --capacity-fraction)");
  cmd->add_option("--capacity-fraction", opt->capacity_fractions,
                  "Cache capacities as fractions of the trace's unique blocks, comma-separated")
      ->delimiter(',')
      ->capture_default_str()
      ->excludes(blocks);
  cmd->add_option("--policy", opt->policy,
                  "Policies to replay, comma-separated (learned, prefix, lru, arc, s3fifo, "
                  "wtinylfu, gdsf), or all; with more than one, Belady and infinite get lines too")
      ->capture_default_str();
  cmd->add_flag("--variants", opt->variants,
                "Also replay derived and synthetic traces (halves, sub-samples, conversation, "
                "agent, coding) to check the policy generalises");
  cmd->callback([opt] { Run(*opt); });
});

}  // namespace
}  // namespace strata::bench
