// `strata bench keys`: keying a 128K-token prompt, beside raw XXH3-128 over the same bytes.
//
// Baselines, measured in the same run:
//  - xxh3_raw: one XXH3-128 call over the prompt's token bytes (512 KiB). The cost floor of
//    hashing the prompt at all.
//  - xxh3_raw_per_block: one XXH3-128 call per block over that block's token bytes, unchained and
//    in place. The floor for any per-block key; the gap to it is what chaining and framing cost.
#include <memory>
#include <random>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "bench_report.h"
#include "../strata/command_registry.h"
#include "strata/key_chain.h"

namespace strata::bench {
namespace {

struct Options {
  bool json = false;
  uint32_t tokens = 128 * 1024;
  int reps = 201;
};

void Run(const Options& opt) {
  BenchReport report("keys", opt.json);
  std::mt19937 rng(42);
  std::uniform_int_distribution<uint32_t> dist(0, 128255);
  std::vector<uint32_t> tokens(opt.tokens);
  for (auto& t : tokens) t = dist(rng);
  const double bytes = tokens.size() * sizeof(uint32_t);
  const std::string prompt = std::to_string(opt.tokens / 1024) + "K";

  for (uint32_t block : {16u, 256u}) {
    NamespaceSpec spec;
    spec.model_id = "meta-llama/Llama-3.1-8B-Instruct";
    spec.kv_dtype = KvDtype::kBFloat16;
    spec.num_layers = 32;
    spec.num_kv_heads = 8;
    spec.head_dim = 128;
    spec.block_size = block;
    auto ns = Namespace::Create(spec);
    if (!ns.ok()) cli::Fail(ns.status().ToString());

    double t_keys = MedianSeconds(opt.reps, [&] {
      auto keys = ComputeBlockKeys(*ns, tokens);
      DoNotOptimize(keys.data());
    });
    double t_raw = MedianSeconds(opt.reps, [&] {
      XXH128_hash_t h = XXH3_128bits(tokens.data(), bytes);
      DoNotOptimize(h.low64);
    });
    const size_t n_blocks = tokens.size() / block;
    double t_per_block = MedianSeconds(opt.reps, [&] {
      uint64_t acc = 0;
      for (size_t b = 0; b < n_blocks; ++b)
        acc ^= XXH3_128bits(tokens.data() + b * block, block * sizeof(uint32_t)).low64;
      DoNotOptimize(acc);
    });

    const std::string tag = prompt + "/block=" + std::to_string(block);
    nlohmann::json extra = {{"tokens", tokens.size()}, {"blocks", n_blocks},
                            {"prompt_us", t_keys * 1e6}, {"target_prompt_us", 100}};
    report.Add({"keys/" + tag, "GB/s", bytes / t_keys / 1e9, "xxh3_raw", bytes / t_raw / 1e9,
                true, extra});
    report.Add({"keys/" + tag, "GB/s", bytes / t_keys / 1e9, "xxh3_raw_per_block",
                bytes / t_per_block / 1e9, true, extra});
    report.Add({"keys_prompt_time/" + tag, "us", t_keys * 1e6, "xxh3_raw", t_raw * 1e6, false,
                {{"target_us", 100}}});
  }
}

[[maybe_unused]] const bool kRegistered = cli::RegisterCommand("bench", [](CLI::App& parent) {
  auto opt = std::make_shared<Options>();
  auto* cmd = parent.add_subcommand("keys", "Key a long prompt vs raw XXH3-128 over the same bytes");
  AddJsonFlag(*cmd, opt->json);
  cmd->add_option("--tokens", opt->tokens, "Prompt length in tokens")->capture_default_str();
  cmd->add_option("--reps", opt->reps, "Timed repetitions (median is reported)")
      ->capture_default_str();
  cmd->callback([opt] { Run(*opt); });
});

}  // namespace
}  // namespace strata::bench
