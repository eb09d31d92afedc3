// `strata demo`: Strata's main job on an embedded single-node default. Replays a Mooncake-format
// request trace (default: the one in tests/data/): each prompt is keyed with the hash-chained
// scheme, looked up against what earlier requests cached (longest cached prefix), then cached.
// Prints what each lookup saw and the totals.
#include <chrono>
#include <iostream>
#include <memory>
#include <unordered_set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "../bench/mooncake_trace.h"
#include "command_registry.h"
#include "namespace_flags.h"
#include "strata/key_chain.h"

namespace strata::cli {
namespace {

struct DemoOptions {
  std::string trace = bench::DefaultTracePath();
  size_t max_requests = 0;
  size_t show = 10;
  bool json = false;
  NamespaceFlags ns;
};

void RunDemo(const DemoOptions& opt) {
  auto trace = bench::ReadMooncakeTrace(opt.trace);
  if (!trace.ok()) Fail(trace.status().ToString());
  Namespace ns = opt.ns.Build();
  size_t n = trace->size();
  if (opt.max_requests && opt.max_requests < n) n = opt.max_requests;

  std::unordered_set<BlockKey, BlockKeyHash> cached;
  uint64_t requested_blocks = 0, hit_blocks = 0, tokens_total = 0;
  double key_seconds = 0;
  if (!opt.json)
    std::cout << fmt::format("strata demo: {} requests from {}\nnamespace {} ({}), block_size {}\n",
                             n, opt.trace, ns.id().ToHex(), ns.spec().model_id, ns.block_size());
  for (size_t r = 0; r < n; ++r) {
    std::vector<uint32_t> tokens = bench::SynthesizeTokens((*trace)[r]);
    auto t0 = std::chrono::steady_clock::now();
    std::vector<BlockKey> keys = ComputeBlockKeys(ns, tokens);
    key_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    size_t hit = 0;
    while (hit < keys.size() && cached.count(keys[hit])) ++hit;
    requested_blocks += keys.size();
    hit_blocks += hit;
    tokens_total += tokens.size();
    if (!opt.json && r < opt.show)
      std::cout << fmt::format("  request {:>5}: {:>6} tokens, {:>5} blocks, cached prefix {:>5} "
                               "blocks ({:>6} tokens), first key {}\n",
                               r, tokens.size(), keys.size(), hit, hit * ns.block_size(),
                               keys.empty() ? std::string("-") : keys[0].ToHex());
    cached.insert(keys.begin(), keys.end());
  }
  const double ratio = requested_blocks ? double(hit_blocks) / requested_blocks : 0;
  nlohmann::json out = {{"requests", n},
                        {"tokens", tokens_total},
                        {"requested_blocks", requested_blocks},
                        {"hit_blocks", hit_blocks},
                        {"prefix_hit_ratio", ratio},
                        {"unique_blocks", cached.size()},
                        {"keying_tokens_per_s", key_seconds > 0 ? tokens_total / key_seconds : 0}};
  if (opt.json) {
    std::cout << out.dump() << "\n";
    return;
  }
  std::cout << fmt::format(
      "totals: {} requests, {} tokens, {} blocks requested, {} served from cache\n"
      "prefix hit ratio {:.3f} with an unbounded cache ({} unique blocks); keyed {:.1f} M tokens/s\n",
      n, tokens_total, requested_blocks, hit_blocks, ratio, cached.size(),
      key_seconds > 0 ? tokens_total / key_seconds / 1e6 : 0.0);
}

[[maybe_unused]] const bool kRegistered = RegisterCommand("", [](CLI::App& parent) {
  auto opt = std::make_shared<DemoOptions>();
  auto* cmd = parent.add_subcommand(
      "demo", "Replay a request trace through an embedded single-node cache and print its lookups");
  cmd->add_option("--trace", opt->trace, "Mooncake-format trace (JSON lines)")->capture_default_str();
  cmd->add_option("--requests", opt->max_requests, "Replay at most this many requests (0: all)");
  cmd->add_option("--show", opt->show, "Print the lookups of the first N requests")
      ->capture_default_str();
  cmd->add_flag("--json", opt->json, "Print the totals as one JSON object");
  opt->ns.AddTo(*cmd);
  cmd->callback([opt] { RunDemo(*opt); });
});

}  // namespace
}  // namespace strata::cli
