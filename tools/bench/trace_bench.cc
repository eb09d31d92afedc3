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
#include <optional>
#include <queue>
#include <tuple>
#include <random>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "bench_report.h"
#include "mooncake_trace.h"
#include "policy_replay.h"
#include "trace_generators.h"
#include "../strata/command_registry.h"
#include "store/eviction_policy.h"
#include "store/learned_policy.h"

namespace strata::bench {
namespace {

struct Options {
  bool json = false;
  std::string trace = DefaultTracePath();
  uint64_t capacity_blocks = 0;
  std::vector<double> capacity_fractions = {0.02, 0.05, 0.10, 0.25};
  std::string policy = "all";
  bool variants = false;
  bool held_out = false;
  double host_fraction = 0;  // with disk_fraction: the two-tier replay instead
  double disk_fraction = 0;
  uint32_t admission_min_frequency = 0;  // TieredStoreOptions' default: every victim
  std::string disk_policy;  // two-tier: the disk tier's policy; empty: the node's choice
  std::string learned_leader = "follow";  // `learned` with one expert forced to lead
};

// One trace at one capacity: every policy of `kinds`, Belady and the infinite cache, in the same
// run. One line per policy, with the offline optimum as baseline (ratio = fraction of Belady).
void RunCapacity(BenchReport& report, const std::string& trace_name, const Chains& chains,
                 uint64_t capacity, const std::vector<store::PolicyKind>& kinds,
                 store::LearnedLeader leader, const std::string& leader_name) {
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
    if (kind == store::PolicyKind::kLearned && leader != store::LearnedLeader::kFollow) {
      // One expert forced to lead for the whole replay: "learned/arc" etc.
      auto policy = store::MakeLearnedPolicy(static_cast<uint32_t>(capacity), {leader});
      add("learned/" + leader_name, ReplayPolicy(chains, *policy));
      continue;
    }
    auto got = kind == store::PolicyKind::kLru ? lru_c : ReplayPolicy(chains, capacity, kind);
    if (!got.ok()) cli::Fail(got.status().ToString());
    add(std::string(store::PolicyKindName(kind)), *got);
  }
  if (kinds.size() > 1) {
    add("belady", opt);
    add("infinite", inf);
  }
}

// One trace through a host tier over a disk tier (ReplayTwoTier: write-back demotion through the
// store's DiskAdmission, promotion on a disk hit), every policy of `kinds` in both tiers. One line
// per policy, with the one-tier Belady of the two tiers' capacity together as the baseline.
void RunTwoTier(BenchReport& report, const std::string& trace_name, const Chains& chains,
                uint64_t host, uint64_t disk, uint32_t min_frequency,
                const std::vector<store::PolicyKind>& kinds,
                std::optional<store::PolicyKind> disk_kind) {
  const ReplayCounts opt = ReplayBelady(chains, host + disk);
  const std::string base_case = "trace/" + trace_name + "/host=" + std::to_string(host) +
                                "/disk=" + std::to_string(disk);
  for (store::PolicyKind kind : kinds) {
    // As the node: the disk tier runs DiskPolicyFor(host policy) unless --disk-policy names one.
    const store::PolicyKind disk_policy_kind = disk_kind.value_or(store::DiskPolicyFor(kind));
    auto got = ReplayTwoTier(chains, host, disk, kind, disk_policy_kind, min_frequency);
    if (!got.ok()) cli::Fail(got.status().ToString());
    const std::string policy(store::PolicyKindName(kind));
    const std::string disk_policy(store::PolicyKindName(disk_policy_kind));
    nlohmann::json extra = {
        {"trace", trace_name},
        {"policy", policy},
        {"disk_policy", disk_policy},
        {"host_blocks", host},
        {"disk_blocks", disk},
        {"admission_min_frequency", min_frequency},
        {"requests", chains.size()},
        {"requested_blocks", got->requested},
        {"hit_ratio", got->Ratio()},
        {"host_hit_ratio", got->HostRatio()},
        {"disk_hit_ratio", got->DiskRatio()},
        {"miss_ratio", 1 - got->Ratio()},
        {"demoted", got->demoted},
        {"rejected", got->rejected},
        {"promoted", got->promoted},
        {"belady_hit_ratio", opt.Ratio()},
    };
    report.Add({base_case + "/policy=" + policy + "/disk_policy=" + disk_policy, "hit_ratio",
                got->Ratio(), "belady", opt.Ratio(), true, extra});
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
  std::optional<store::PolicyKind> disk_kind;
  if (!opt.disk_policy.empty()) {
    auto kind = store::ParsePolicyKind(opt.disk_policy);
    if (!kind.ok()) cli::Fail(kind.status().ToString());
    disk_kind = *kind;
  }
  auto leader = store::ParseLearnedLeader(opt.learned_leader);
  if (!leader.ok()) cli::Fail(leader.status().ToString());
  if ((opt.host_fraction > 0) != (opt.disk_fraction > 0))
    cli::Fail("--host-fraction and --disk-fraction go together");
  for (double f : {opt.host_fraction, opt.disk_fraction})
    if (f < 0 || f > 1) cli::Fail("--host-fraction and --disk-fraction must be in (0, 1]");
  auto trace = ReadMooncakeTrace(opt.trace);
  if (!trace.ok()) cli::Fail(trace.status().ToString());
  Chains chains;
  chains.reserve(trace->size());
  for (auto& r : *trace) chains.push_back(std::move(r.hash_ids));
  if (chains.empty()) cli::Fail("trace '" + opt.trace + "' has no requests");

  std::vector<std::pair<std::string, Chains>> traces;
  traces.reserve(13);  // `full` below refers into traces[0]
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

  if (opt.held_out) {
    // Generator seeds that no design choice of `learned` looked at (docs/store.md, "The seventh
    // pass"): the check a change must pass beside --variants.
    for (uint64_t seed : {7, 11})
      traces.emplace_back("synthetic_conversation_" + std::to_string(seed),
                          SyntheticConversation(seed));
    traces.emplace_back("synthetic_agent_5", SyntheticAgent(5));
    for (uint64_t seed : {9, 13})
      traces.emplace_back("synthetic_coding_" + std::to_string(seed), SyntheticCoding(seed));
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
    if (opt.host_fraction > 0) {
      RunTwoTier(report, name, c, std::max<uint64_t>(1, unique * opt.host_fraction),
                 std::max<uint64_t>(1, unique * opt.disk_fraction), opt.admission_min_frequency,
                 kinds, disk_kind);
      continue;
    }
    for (uint64_t cap : capacities)
      RunCapacity(report, name, c, cap, kinds, *leader, opt.learned_leader);
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
                  "wtinylfu, gdsf, regret), or all; with more than one, Belady and infinite get "
                  "lines too")
      ->capture_default_str();
  cmd->add_flag("--variants", opt->variants,
                "Also replay derived and synthetic traces (halves, sub-samples, conversation, "
                "agent, coding) to check the policy generalises");
  cmd->add_flag("--held-out", opt->held_out,
                "Also replay the held-out generator seeds (conversation 7 and 11, agent 5, coding 9 "
                "and 13), which the policy's design never looked at");
  auto* host = cmd->add_option("--host-fraction", opt->host_fraction,
                               "Two-tier replay: host tier capacity as a fraction of the unique "
                               "blocks (with --disk-fraction; replaces --capacity-fraction)");
  cmd->add_option("--disk-fraction", opt->disk_fraction,
                  "Two-tier replay: disk tier capacity as a fraction of the unique blocks");
  cmd->add_option("--admission-min-frequency", opt->admission_min_frequency,
                  "Two-tier replay: accesses a host victim needs to be written to disk (the "
                  "store's disk_admission_min_frequency)")
      ->capture_default_str();
  cmd->add_option("--disk-policy", opt->disk_policy,
                  "Two-tier replay: the disk tier's policy (default: the node's, the host "
                  "tier's except prefix under learned)");
  cmd->add_option("--learned-leader", opt->learned_leader,
                  "learned: force one expert to lead for the whole replay (dead_block, recency, "
                  "frequency, fifo, arc), mix arc and fifo by regret (regret: the `regret` "
                  "policy), or follow the simulations (the policy)")
      ->capture_default_str();
  host->excludes(blocks);
  cmd->callback([opt] { Run(*opt); });
});

}  // namespace
}  // namespace strata::bench
