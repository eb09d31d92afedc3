// `strata bench kernels`: the CPU gather/scatter and every block codec, beside memcpy of the same
// bytes in the same run (CPU-only deployments run these on their data path), plus each codec's
// compression ratio and each lossy codec's error.
//
// Cases (shape: 16 tokens x 8 KV heads x 128 dims x 32 layers unless stated; MLA: 576 latent):
//  - gather|scatter/<layout>/<dtype>/...: GB/s of block bytes moved vs memcpy of as many bytes
//    between two contiguous buffers (baseline memcpy).
//  - encode|decode/<codec>/<dtype>: GB/s of raw block bytes vs memcpy of the raw bytes.
//  - compression/<codec>/<dtype>: metric compression_ratio = raw / encoded bytes over KV-like
//    blocks (kernels/kv_synth.h), baseline codec none (1.0).
//  - codec_error/<codec>/<dtype>: metric rel_l2_error = ||x - x'|| / ||x|| against the fp32 KV the
//    blocks were rounded from; baseline <dtype>_rounding, the error of storing that KV in the
//    dtype at all (lower is better). Extra fields: cosine, max_abs_error (vs the dtype block).
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "../strata/command_registry.h"
#include "bench_report.h"
#include "strata_kernels/block_codec.h"
#include "strata_kernels/gather_scatter.h"
#include "strata_kernels/kv_synth.h"
#include "strata_kernels/numeric.h"

namespace strata::bench {
namespace {

namespace k = strata::kernels;

struct Options {
  bool json = false;
  uint32_t blocks = 16;       // blocks per gather/scatter call
  uint32_t codec_blocks = 2;  // KV-like blocks synthesized for the codec cases
  int reps = 5;
  int zstd_level = 1;
};

// Runs fns round-robin `reps` times (after one warm-up round) and returns each one's median wall
// time, so that a noisy neighbour hits the case and its memcpy baseline alike.
std::vector<double> InterleavedMedians(int reps, const std::vector<std::function<void()>>& fns) {
  std::vector<std::vector<double>> t(fns.size());
  for (int r = -1; r < reps; ++r) {
    for (size_t i = 0; i < fns.size(); ++i) {
      const auto start = std::chrono::steady_clock::now();
      fns[i]();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (r >= 0) t[i].push_back(s);
    }
  }
  std::vector<double> med;
  for (auto& v : t) {
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    med.push_back(v[v.size() / 2]);
  }
  return med;
}

void Check(const k::KernelStatus& st) {
  if (!st.ok()) cli::Fail("bench kernels: " + st.ToString());
}

double ElemAt(k::KvDtype dt, const std::byte* p, uint64_t i) {
  uint16_t h;
  switch (dt) {
    case k::KvDtype::kFloat16:
      std::memcpy(&h, p + 2 * i, 2);
      return k::HalfToFloat(h);
    case k::KvDtype::kBFloat16:
      std::memcpy(&h, p + 2 * i, 2);
      return k::Bf16ToFloat(h);
    case k::KvDtype::kFloat32: {
      float f;
      std::memcpy(&f, p + 4 * i, 4);
      return f;
    }
    default:
      return 0;
  }
}

// ||ref - x|| / ||ref||, ref in fp32.
double RelL2(const std::vector<std::byte>& ref32, k::KvDtype dt, const std::byte* x, uint64_t n) {
  double num = 0, den = 0;
  for (uint64_t i = 0; i < n; ++i) {
    const double r = ElemAt(k::KvDtype::kFloat32, ref32.data(), i);
    const double d = r - ElemAt(dt, x, i);
    num += d * d;
    den += r * r;
  }
  return den > 0 ? std::sqrt(num / den) : 0;
}

void BenchGatherScatter(const Options& opt, BenchReport& report) {
  for (auto layout : {k::PagedLayout::kVllmFlashAttn, k::PagedLayout::kFlashInfer,
                      k::PagedLayout::kMla}) {
    k::PagedKvSpec spec;
    spec.layout = layout;
    spec.dtype = layout == k::PagedLayout::kMla ? k::KvDtype::kBFloat16 : k::KvDtype::kFloat16;
    spec.num_layers = 32;
    spec.block_size = 16;
    spec.num_kv_heads = layout == k::PagedLayout::kMla ? 1 : 8;
    spec.head_dim = layout == k::PagedLayout::kMla ? 576 : 128;
    spec.num_blocks = opt.blocks * 4;
    const uint64_t bb = spec.block_shape().bytes(), total = bb * opt.blocks;
    std::vector<std::vector<std::byte>> layers(spec.num_layers,
                                               std::vector<std::byte>(spec.layer_bytes()));
    for (uint32_t l = 0; l < spec.num_layers; ++l)
      std::memset(layers[l].data(), int(l + 1), layers[l].size());
    std::vector<std::span<const std::byte>> rl(layers.begin(), layers.end());
    std::vector<std::span<std::byte>> wl(layers.begin(), layers.end());
    std::vector<int32_t> ids(spec.num_blocks);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), std::mt19937(7));
    ids.resize(opt.blocks);
    std::vector<std::byte> blocks(total), src(total, std::byte{3});
    std::vector<std::span<std::byte>> dst;
    std::vector<std::span<const std::byte>> csrc;
    for (uint32_t i = 0; i < opt.blocks; ++i) {
      dst.emplace_back(blocks.data() + i * bb, bb);
      csrc.emplace_back(blocks.data() + i * bb, bb);
    }
    const auto t = InterleavedMedians(
        opt.reps, {[&] {
                     std::memcpy(blocks.data(), src.data(), total);
                     DoNotOptimize(blocks[total / 2]);
                   },
                   [&] { Check(k::GatherBlocksCpu(spec, rl, ids, dst)); },
                   [&] { Check(k::ScatterBlocksCpu(spec, wl, ids, csrc)); }});
    const double t_memcpy = t[0], t_g = t[1], t_s = t[2];
    const std::string tag = std::string(k::PagedLayoutName(spec.layout)) + "/" +
                            std::string(k::KvDtypeName(spec.dtype)) + "/" +
                            std::to_string(bb >> 10) + "KiB_blocks/n=" + std::to_string(opt.blocks);
    const nlohmann::json extra = {{"bytes", total}, {"block_bytes", bb}};
    report.Add({"gather/" + tag, "GB/s", total / t_g / 1e9, "memcpy", total / t_memcpy / 1e9, true, extra});
    report.Add({"scatter/" + tag, "GB/s", total / t_s / 1e9, "memcpy", total / t_memcpy / 1e9, true, extra});
  }
}

void BenchCodecs(const Options& opt, BenchReport& report) {
  const k::Codec codecs[] = {k::Codec::kShuffleZstd, k::Codec::kShuffleLz4, k::Codec::kFp8E4M3,
                             k::Codec::kInt8Group, k::Codec::kInt4Kivi};
  k::BlockShape shape{32, 2, 16, 8, 128, k::KvDtype::kFloat32};
  k::KvSynthOptions synth;
  synth.seed = 2024;
  synth.first_position = 4096;
  std::vector<std::byte> ref32;
  Check(k::SynthesizeKvBlocks(shape, opt.codec_blocks, synth, &ref32));
  for (auto dtype : {k::KvDtype::kFloat16, k::KvDtype::kBFloat16}) {
    shape.dtype = dtype;
    std::vector<std::byte> data;
    Check(k::SynthesizeKvBlocks(shape, opt.codec_blocks, synth, &data));
    const uint64_t bb = shape.bytes(), total = bb * opt.codec_blocks;
    const double dtype_err = RelL2(ref32, dtype, data.data(), shape.elems() * opt.codec_blocks);
    std::vector<std::byte> copy(total);
    auto memcpy_fn = [&] {
      std::memcpy(copy.data(), data.data(), total);
      DoNotOptimize(copy[total / 2]);
    };
    for (k::Codec codec : codecs) {
      k::CodecOptions co;
      co.zstd_level = opt.zstd_level;
      std::unique_ptr<k::BlockCodec> c;
      Check(k::BlockCodec::Create(codec, shape, co, &c));
      const uint64_t cap = k::AlignUp16(c->max_encoded_bytes());
      std::vector<uint64_t> pay_words(cap * opt.codec_blocks / 8 + 1);
      std::byte* pay = reinterpret_cast<std::byte*>(pay_words.data());
      std::vector<uint64_t> sizes(opt.codec_blocks);
      std::vector<std::byte> out(total);
      auto encode_all = [&] {
        for (uint32_t b = 0; b < opt.codec_blocks; ++b)
          Check(c->Encode({data.data() + b * bb, bb}, {pay + b * cap, cap}, &sizes[b]));
      };
      auto decode_all = [&] {
        for (uint32_t b = 0; b < opt.codec_blocks; ++b)
          Check(c->Decode({pay + b * cap, sizes[b]}, {out.data() + b * bb, bb}));
      };
      encode_all();  // decode_all needs the payloads
      const auto t = InterleavedMedians(opt.reps, {memcpy_fn, encode_all, decode_all});
      const double memcpy_gbs = total / t[0] / 1e9, t_enc = t[1], t_dec = t[2];
      const uint64_t encoded = std::accumulate(sizes.begin(), sizes.end(), uint64_t{0});
      const std::string tag = std::string(k::CodecName(codec)) + "/" + std::string(k::KvDtypeName(dtype));
      nlohmann::json extra = {{"block_bytes", bb}, {"blocks", opt.codec_blocks}};
      if (codec == k::Codec::kShuffleZstd) extra["zstd_level"] = opt.zstd_level;
      report.Add({"encode/" + tag, "GB/s", total / t_enc / 1e9, "memcpy", memcpy_gbs, true, extra});
      report.Add({"decode/" + tag, "GB/s", total / t_dec / 1e9, "memcpy", memcpy_gbs, true, extra});
      report.Add({"compression/" + tag, "compression_ratio", double(total) / encoded, "none", 1.0,
                  true, extra});
      if (k::IsLossyCodec(codec)) {
        const uint64_t n = shape.elems() * opt.codec_blocks;
        double dot = 0, na = 0, nb = 0, nd = 0, max_abs = 0;
        for (uint64_t i = 0; i < n; ++i) {
          const double x = ElemAt(dtype, data.data(), i), y = ElemAt(dtype, out.data(), i);
          dot += x * y;
          na += x * x;
          nb += y * y;
          nd += (x - y) * (x - y);
          max_abs = std::max(max_abs, std::fabs(x - y));
        }
        nlohmann::json e = extra;
        e["cosine"] = dot / std::sqrt(na * nb);
        e["max_abs_error"] = max_abs;
        e["rel_l2_vs_dtype_block"] = std::sqrt(nd / na);
        report.Add({"codec_error/" + tag, "rel_l2_error", RelL2(ref32, dtype, out.data(), n),
                    std::string(k::KvDtypeName(dtype)) + "_rounding", dtype_err, false, e});
      }
    }
  }
}

void Run(const Options& opt) {
  if (opt.blocks == 0 || opt.codec_blocks == 0 || opt.reps <= 0)
    cli::Fail("bench kernels: --blocks, --codec-blocks and --reps must be positive");
  BenchReport report("kernels", opt.json);
  BenchGatherScatter(opt, report);
  BenchCodecs(opt, report);
}

[[maybe_unused]] const bool kRegistered = cli::RegisterCommand("bench", [](CLI::App& parent) {
  auto opt = std::make_shared<Options>();
  auto* cmd = parent.add_subcommand(
      "kernels", "CPU gather/scatter and block codecs vs memcpy; compression ratios and errors");
  AddJsonFlag(*cmd, opt->json);
  cmd->add_option("--blocks", opt->blocks, "Blocks per gather/scatter call")->capture_default_str();
  cmd->add_option("--codec-blocks", opt->codec_blocks, "KV-like blocks for the codec cases")
      ->capture_default_str();
  cmd->add_option("--reps", opt->reps, "Timed repetitions (median is reported)")
      ->capture_default_str();
  cmd->add_option("--zstd-level", opt->zstd_level, "zstd level of shuffle_zstd")
      ->capture_default_str();
  cmd->callback([opt] { Run(*opt); });
});

}  // namespace
}  // namespace strata::bench
