// strata_gpu_check: the CUDA kernels of kernels/ against their CPU reference, then their
// bandwidth beside cudaMemcpy in the same run (DESIGN.md "Benchmarks" JSON lines with --json).
//
//   correctness  gather/scatter for every layout x {fp16, bf16, fp8} into device memory and into
//                mapped pinned host memory, byte-exact; the 16-byte and the byte-wise paths, chunks
//                of one tile and of several;
//                lossy codecs bit-exact (payloads and decoded blocks) and NaN flagged;
//                head-shard gather/scatter (the paged API's per-KV-head shards) byte-exact with
//                GatherHeadShardsCpu / ScatterHeadShardsCpu: every layout x {fp16, bf16, fp8},
//                device and pinned host shards, whole blocks and single layers, skipped shards
//   bandwidth    blocks of 16 tokens x 8 KV heads x 128 dims x 32 layers (fp16, 2 MiB), N random
//                engine blocks: gather/scatter vs cudaMemcpy D2D of the same bytes (target >= 0.8);
//                gather into / scatter from pinned host vs cudaMemcpy D2H / H2D; quantize /
//                dequantize (raw bytes per second) vs D2D (target >= 0.7); head-shard gather /
//                scatter to device shards vs D2D (target >= 0.8) and to / from pinned host shards
//                (what the client's paged store and load do) vs D2H / H2D (target >= 0.8)
//
// Exit status 1 on any mismatch or CUDA error, so a script can gate on it. Dependencies: the CUDA
// runtime and kernels/ (CPU reference + CUDA kernels) only.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "strata_kernels/codec.h"
#include "strata_kernels/cuda_kernels.h"
#include "strata_kernels/gather_scatter.h"
#include "strata_kernels/kv_synth.h"

namespace sk = strata::kernels;

namespace {

int g_failures = 0;
bool g_json = false;
std::string g_device;

void Fail(const std::string& what) {
  std::printf("FAIL  %s\n", what.c_str());
  ++g_failures;
}
void Pass(const std::string& what) {
  if (!g_json) std::printf("ok    %s\n", what.c_str());
}

#define CUDA_OK(expr)                                                                  \
  do {                                                                                 \
    cudaError_t _e = (expr);                                                           \
    if (_e != cudaSuccess) {                                                           \
      std::printf("FAIL  CUDA error %s at %s:%d: %s\n", cudaGetErrorName(_e), __FILE__, \
                  __LINE__, #expr);                                                    \
      std::exit(1);                                                                    \
    }                                                                                  \
  } while (0)

bool Check(const sk::KernelStatus& st, const std::string& what) {
  if (!st.ok()) Fail(what + ": " + st.ToString());
  return st.ok();
}

void Fill(std::vector<std::byte>& buf, uint64_t seed) {
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
  for (auto& b : buf) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    b = static_cast<std::byte>(s >> 24);
  }
}

struct Dev {
  explicit Dev(size_t n) : size(n) { CUDA_OK(cudaMalloc(&p, n)); }
  ~Dev() { cudaFree(p); }
  char* c() const { return static_cast<char*>(p); }
  void* p = nullptr;
  size_t size;
};
struct Pinned {
  explicit Pinned(size_t n) : size(n) { CUDA_OK(cudaHostAlloc(&p, n, cudaHostAllocMapped)); }
  ~Pinned() { cudaFreeHost(p); }
  char* c() const { return static_cast<char*>(p); }
  void* p = nullptr;
  size_t size;
};

std::vector<std::byte> Download(const void* d, size_t n) {
  std::vector<std::byte> out(n);
  CUDA_OK(cudaMemcpy(out.data(), d, n, cudaMemcpyDeviceToHost));
  return out;
}

// ---------------------------------------------------------------- correctness
void CheckGatherScatter() {
  for (auto layout : {sk::PagedLayout::kVllmFlashAttn, sk::PagedLayout::kFlashInfer,
                      sk::PagedLayout::kMla}) {
    for (auto dtype : {sk::KvDtype::kFloat16, sk::KvDtype::kBFloat16, sk::KvDtype::kFloat8E4M3}) {
      // {tokens, dim}: dim 3 (MLA 77) gives chunks that are not multiples of 16 bytes, so the
      // byte-wise path runs; dim 128 (MLA 576) takes the 16-byte path. 16 / 5 tokens make one
      // tile per chunk; 40 / 41 tokens make chunks of several tiles (up to 80 KiB, 3 tiles).
      struct GsShape {
        uint32_t tokens, dim;
      };
      for (const GsShape gs : {GsShape{16, 128}, GsShape{5, 3}, GsShape{40, 128}, GsShape{41, 3}}) {
        for (bool pinned_dst : {false, true}) {
          sk::PagedKvSpec spec;
          spec.layout = layout;
          spec.dtype = dtype;
          spec.num_layers = 4;
          spec.num_blocks = 37;
          const bool odd = gs.dim == 3;
          spec.block_size = gs.tokens;
          spec.num_kv_heads =
              layout == sk::PagedLayout::kMla ? 1 : (odd ? (gs.tokens > 16 ? 9 : 3) : 8);
          spec.head_dim = layout == sk::PagedLayout::kMla ? (odd ? 77 : 576) : gs.dim;
          const std::string name = std::string("gather/scatter ") +
                                   std::string(sk::PagedLayoutName(layout)) + " " +
                                   std::string(sk::KvDtypeName(dtype)) + " dim " +
                                   std::to_string(spec.head_dim) + " x " +
                                   std::to_string(spec.block_size) + " tokens" +
                                   (pinned_dst ? " (pinned host blocks)" : " (device blocks)");
          std::vector<std::vector<std::byte>> host(spec.num_layers,
                                                   std::vector<std::byte>(spec.layer_bytes()));
          std::vector<std::unique_ptr<Dev>> dev;
          std::vector<void*> bases;
          for (uint32_t l = 0; l < spec.num_layers; ++l) {
            Fill(host[l], 31 + l);
            dev.push_back(std::make_unique<Dev>(spec.layer_bytes()));
            CUDA_OK(cudaMemcpy(dev[l]->p, host[l].data(), spec.layer_bytes(), cudaMemcpyHostToDevice));
            bases.push_back(dev[l]->p);
          }
          std::unique_ptr<sk::cuda::CudaKvMover> mover;
          if (!Check(sk::cuda::CudaKvMover::Create(spec, bases, &mover), name)) continue;
          const uint64_t bb = spec.block_shape().bytes();
          const std::vector<int32_t> ids = {36, 0, 17, 5, 22, 9, 30};
          const size_t n = ids.size();
          Dev dblocks(bb * n);
          Pinned hblocks(bb * n);
          char* blocks_base = pinned_dst ? hblocks.c() : dblocks.c();
          if (pinned_dst) {
            void* dp = nullptr;
            CUDA_OK(cudaHostGetDevicePointer(&dp, hblocks.p, 0));
            blocks_base = static_cast<char*>(dp);
          }
          std::vector<void*> ptrs;
          for (size_t i = 0; i < n; ++i) ptrs.push_back(blocks_base + i * bb);
          if (!Check(mover->Gather(ids, ptrs, nullptr), name)) continue;
          CUDA_OK(cudaDeviceSynchronize());
          std::vector<std::byte> got = pinned_dst
                                           ? std::vector<std::byte>(reinterpret_cast<std::byte*>(hblocks.c()),
                                                                    reinterpret_cast<std::byte*>(hblocks.c()) + bb * n)
                                           : Download(dblocks.p, bb * n);
          std::vector<std::byte> ref(bb * n);
          std::vector<std::span<std::byte>> rs;
          std::vector<std::span<const std::byte>> ls;
          for (size_t i = 0; i < n; ++i) rs.emplace_back(ref.data() + i * bb, bb);
          for (auto& h : host) ls.emplace_back(h);
          if (!Check(sk::GatherBlocksCpu(spec, ls, ids, rs), name)) continue;
          if (got != ref) {
            Fail(name + ": gather differs from the CPU reference");
            continue;
          }
          // scatter fresh bytes to other blocks
          std::vector<std::byte> fresh(bb * n);
          Fill(fresh, 77);
          if (pinned_dst) std::memcpy(hblocks.p, fresh.data(), bb * n);
          else CUDA_OK(cudaMemcpy(dblocks.p, fresh.data(), bb * n, cudaMemcpyHostToDevice));
          const std::vector<int32_t> to = {1, 2, 35, 14, 20, 8, 33};
          std::vector<const void*> cptrs(ptrs.begin(), ptrs.end());
          if (!Check(mover->Scatter(to, cptrs, nullptr), name)) continue;
          CUDA_OK(cudaDeviceSynchronize());
          std::vector<std::span<std::byte>> wl;
          std::vector<std::span<const std::byte>> fs;
          for (auto& h : host) wl.emplace_back(h);
          for (size_t i = 0; i < n; ++i) fs.emplace_back(fresh.data() + i * bb, bb);
          if (!Check(sk::ScatterBlocksCpu(spec, wl, to, fs), name)) continue;
          bool same = true;
          for (uint32_t l = 0; l < spec.num_layers; ++l)
            same = same && Download(dev[l]->p, spec.layer_bytes()) == host[l];
          if (!same) {
            Fail(name + ": scatter differs from the CPU reference");
            continue;
          }
          const std::vector<int32_t> bad = {3, 37};
          std::vector<void*> two(ptrs.begin(), ptrs.begin() + 2);
          if (mover->Gather(bad, two, nullptr).code() != sk::KernelCode::kInvalidArgument) {
            Fail(name + ": an out-of-range block id was not rejected");
            continue;
          }
          Pass(name);
        }
      }
    }
  }
}


// Head shards: shard (i, h) of page ids[i] is [layer][plane][token][head_dim] of head h.
void CheckHeadShards() {
  for (auto layout : {sk::PagedLayout::kVllmFlashAttn, sk::PagedLayout::kFlashInfer,
                      sk::PagedLayout::kMla}) {
    for (auto dtype : {sk::KvDtype::kFloat16, sk::KvDtype::kBFloat16, sk::KvDtype::kFloat8E4M3}) {
      struct HsShape {
        uint32_t tokens, dim, heads;
      };
      for (const HsShape hs : {HsShape{16, 128, 8}, HsShape{16, 64, 4}, HsShape{40, 128, 8},
                               HsShape{5, 3, 3}}) {
        for (bool pinned : {false, true}) {
          sk::PagedKvSpec spec;
          spec.layout = layout;
          spec.dtype = dtype;
          spec.num_layers = 4;
          spec.num_blocks = 37;
          spec.block_size = hs.tokens;
          spec.num_kv_heads = layout == sk::PagedLayout::kMla ? 1 : hs.heads;
          spec.head_dim = layout == sk::PagedLayout::kMla ? (hs.dim == 3 ? 77 : 576) : hs.dim;
          const std::string name = std::string("head shards ") +
                                   std::string(sk::PagedLayoutName(layout)) + " " +
                                   std::string(sk::KvDtypeName(dtype)) + " dim " +
                                   std::to_string(spec.head_dim) + " x " +
                                   std::to_string(spec.num_kv_heads) + " heads x " +
                                   std::to_string(spec.block_size) + " tokens" +
                                   (pinned ? " (pinned host shards)" : " (device shards)");
          std::vector<std::vector<std::byte>> host(spec.num_layers,
                                                   std::vector<std::byte>(spec.layer_bytes()));
          std::vector<std::unique_ptr<Dev>> dev;
          std::vector<void*> bases;
          for (uint32_t l = 0; l < spec.num_layers; ++l) {
            Fill(host[l], 41 + l);
            dev.push_back(std::make_unique<Dev>(spec.layer_bytes()));
            CUDA_OK(cudaMemcpy(dev[l]->p, host[l].data(), spec.layer_bytes(),
                               cudaMemcpyHostToDevice));
            bases.push_back(dev[l]->p);
          }
          std::unique_ptr<sk::cuda::CudaKvMover> mover;
          if (!Check(sk::cuda::CudaKvMover::Create(spec, bases, &mover), name)) continue;
          sk::BlockShape shard = spec.block_shape();
          shard.num_kv_heads = 1;
          const uint64_t sb = shard.bytes();
          const std::vector<int32_t> ids = {36, 0, 17, 5, 22};
          const size_t n = ids.size() * spec.num_kv_heads;
          Dev dshards(sb * n);
          Pinned hshards(sb * n);
          char* base = dshards.c();
          if (pinned) {
            void* dp = nullptr;
            CUDA_OK(cudaHostGetDevicePointer(&dp, hshards.p, 0));
            base = static_cast<char*>(dp);
          }
          auto read = [&] {
            if (pinned)
              return std::vector<std::byte>(reinterpret_cast<std::byte*>(hshards.c()),
                                            reinterpret_cast<std::byte*>(hshards.c()) + sb * n);
            return Download(dshards.p, sb * n);
          };
          auto write = [&](const std::vector<std::byte>& v) {
            if (pinned) std::memcpy(hshards.p, v.data(), sb * n);
            else CUDA_OK(cudaMemcpy(dshards.p, v.data(), sb * n, cudaMemcpyHostToDevice));
          };
          std::vector<void*> ptrs;
          for (size_t i = 0; i < n; ++i) ptrs.push_back(base + i * sb);
          std::vector<std::byte> ref(sb * n);
          std::vector<std::span<std::byte>> rs;
          std::vector<std::span<const std::byte>> ls;
          for (size_t i = 0; i < n; ++i) rs.emplace_back(ref.data() + i * sb, sb);
          for (auto& h : host) ls.emplace_back(h);
          if (!Check(sk::GatherHeadShardsCpu(spec, ls, ids, rs, 0, spec.num_layers), name))
            continue;
          if (!Check(mover->GatherHeadShards(ids, ptrs, 0, spec.num_layers, nullptr), name))
            continue;
          CUDA_OK(cudaDeviceSynchronize());
          if (read() != ref) {
            Fail(name + ": gather differs from GatherHeadShardsCpu");
            continue;
          }
          // Layer by layer, every other shard skipped: the rest equal the reference.
          write(std::vector<std::byte>(sb * n));
          std::vector<void*> some = ptrs;
          for (size_t i = 0; i < n; i += 2) some[i] = nullptr;
          bool ok = true;
          for (uint32_t l = 0; l < spec.num_layers && ok; ++l)
            ok = Check(mover->GatherHeadShards(ids, some, l, l + 1, nullptr), name);
          if (!ok) continue;
          CUDA_OK(cudaDeviceSynchronize());
          std::vector<std::byte> want(sb * n);
          for (size_t i = 1; i < n; i += 2) std::memcpy(&want[i * sb], &ref[i * sb], sb);
          if (read() != want) {
            Fail(name + ": layer-by-layer gather with skipped shards differs");
            continue;
          }
          std::vector<std::byte> fresh(sb * n);
          Fill(fresh, 91);
          write(fresh);
          const std::vector<int32_t> to = {1, 2, 35, 14, 20};
          std::vector<const void*> cptrs(ptrs.begin(), ptrs.end());
          if (!Check(mover->ScatterHeadShards(to, cptrs, 0, spec.num_layers, nullptr), name))
            continue;
          CUDA_OK(cudaDeviceSynchronize());
          std::vector<std::span<std::byte>> wl;
          std::vector<std::span<const std::byte>> fs;
          for (auto& h : host) wl.emplace_back(h);
          for (size_t i = 0; i < n; ++i) fs.emplace_back(fresh.data() + i * sb, sb);
          if (!Check(sk::ScatterHeadShardsCpu(spec, wl, to, fs, 0, spec.num_layers), name))
            continue;
          bool same = true;
          for (uint32_t l = 0; l < spec.num_layers; ++l)
            same = same && Download(dev[l]->p, spec.layer_bytes()) == host[l];
          if (!same) {
            Fail(name + ": scatter differs from ScatterHeadShardsCpu");
            continue;
          }
          Pass(name);
        }
      }
    }
  }
}

void CheckCodecs() {
  const sk::BlockShape shapes[] = {{8, 2, 16, 8, 128, sk::KvDtype::kFloat16},
                                   {8, 2, 16, 8, 128, sk::KvDtype::kBFloat16},
                                   {4, 2, 16, 4, 80, sk::KvDtype::kFloat16},
                                   {4, 1, 16, 1, 576, sk::KvDtype::kBFloat16},
                                   {2, 2, 256, 2, 64, sk::KvDtype::kBFloat16},
                                   {2, 2, 24, 4, 64, sk::KvDtype::kFloat16}};
  for (const auto& shape : shapes) {
    constexpr uint32_t kBlocks = 4;
    sk::KvSynthOptions opt;
    opt.hidden_dim = 128;
    std::vector<std::byte> data;
    if (!Check(sk::SynthesizeKvBlocks(shape, kBlocks, opt, &data), "synthesize")) continue;
    for (auto codec : {sk::Codec::kFp8E4M3, sk::Codec::kInt8Group, sk::Codec::kInt4Kivi}) {
      const std::string name = "codec " + std::string(sk::CodecName(codec)) + " " +
                               std::string(sk::KvDtypeName(shape.dtype)) + " L" +
                               std::to_string(shape.num_layers) + " T" +
                               std::to_string(shape.block_size) + " H" +
                               std::to_string(shape.num_kv_heads) + " D" +
                               std::to_string(shape.head_dim);
      std::unique_ptr<sk::cuda::CudaCodec> gc;
      if (!Check(sk::cuda::CudaCodec::Create(codec, shape, &gc), name)) continue;
      const uint64_t eb = gc->encoded_bytes(), pb = sk::AlignUp16(eb), bb = shape.bytes();
      Dev din(bb * kBlocks), dpay(pb * kBlocks), dout(bb * kBlocks), dflags(4 * kBlocks);
      std::vector<const void*> ins;
      std::vector<void*> pays, outs;
      for (uint32_t i = 0; i < kBlocks; ++i) {
        ins.push_back(din.c() + i * bb);
        pays.push_back(dpay.c() + i * pb);
        outs.push_back(dout.c() + i * bb);
      }
      bool ok = true;
      for (int poison = 0; poison < 2 && ok; ++poison) {
        auto input = data;
        if (poison) {  // NaN in block 2
          const uint16_t nan = 0x7fc0;
          std::memcpy(input.data() + 2 * bb + 2 * 1234, &nan, 2);
        }
        CUDA_OK(cudaMemcpy(din.p, input.data(), bb * kBlocks, cudaMemcpyHostToDevice));
        ok = Check(gc->Encode(ins, pays, static_cast<uint32_t*>(dflags.p), nullptr), name);
        std::vector<const void*> cp(pays.begin(), pays.end());
        ok = ok && Check(gc->Decode(cp, outs, nullptr), name);
        CUDA_OK(cudaDeviceSynchronize());
        if (!ok) break;
        const auto gpay = Download(dpay.p, pb * kBlocks), gout = Download(dout.p, bb * kBlocks);
        const auto gflags = Download(dflags.p, 4 * kBlocks);
        for (uint32_t i = 0; i < kBlocks && ok; ++i) {
          uint32_t flag;
          std::memcpy(&flag, gflags.data() + 4 * i, 4);
          std::vector<uint64_t> cpay((eb + 7) / 8);
          std::span<std::byte> cs(reinterpret_cast<std::byte*>(cpay.data()), eb);
          const auto st = sk::QuantizeBlockCpu(codec, shape, {input.data() + i * bb, bb}, cs);
          if (poison && i == 2) {
            if (flag == 0 || st.code() != sk::KernelCode::kOutOfRange) {
              Fail(name + ": NaN input not flagged (flag " + std::to_string(flag) + ", CPU " +
                   st.ToString() + ")");
              ok = false;
            }
            continue;
          }
          if (flag != 0 || !st.ok()) {
            Fail(name + ": block " + std::to_string(i) + " flagged " + std::to_string(flag) +
                 " / CPU " + st.ToString());
            ok = false;
            continue;
          }
          if (std::memcmp(cs.data(), gpay.data() + i * pb, eb) != 0) {
            size_t at = 0;
            while (at < eb && cs[at] == gpay[i * pb + at]) ++at;
            Fail(name + ": payload differs from the CPU reference at byte " + std::to_string(at));
            ok = false;
            continue;
          }
          std::vector<std::byte> cout(bb);
          ok = Check(sk::DequantizeBlockCpu(codec, shape, cs, cout), name);
          if (ok && std::memcmp(cout.data(), gout.data() + i * bb, bb) != 0) {
            Fail(name + ": decoded block differs from the CPU reference");
            ok = false;
          }
        }
      }
      if (ok) Pass(name + " (bit-exact, NaN flagged)");
    }
  }
}

// ---------------------------------------------------------------- bandwidth
struct Timer {
  cudaEvent_t a, b;
  Timer() {
    CUDA_OK(cudaEventCreate(&a));
    CUDA_OK(cudaEventCreate(&b));
  }
  ~Timer() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  template <typename Fn>
  double MedianSeconds(int reps, Fn&& fn) {
    fn();
    CUDA_OK(cudaDeviceSynchronize());
    std::vector<double> t;
    for (int i = 0; i < reps; ++i) {
      CUDA_OK(cudaEventRecord(a));
      fn();
      CUDA_OK(cudaEventRecord(b));
      CUDA_OK(cudaEventSynchronize(b));
      float ms = 0;
      CUDA_OK(cudaEventElapsedTime(&ms, a, b));
      t.push_back(ms / 1e3);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }
};

void Report(const std::string& name, double bytes, double t, const std::string& baseline,
            double bytes_base, double t_base, double target) {
  const double v = bytes / t / 1e9, bv = bytes_base / t_base / 1e9, ratio = v / bv;
  const bool met = target <= 0 || ratio >= target;
  if (g_json) {
    std::printf("{\"bench\":\"kernels_gpu\",\"case\":\"%s\",\"metric\":\"GB/s\",\"value\":%.3f,"
                "\"baseline\":\"%s\",\"baseline_value\":%.3f,\"ratio\":%.4f,\"target_ratio\":%.2f,"
                "\"device\":\"%s\"}\n",
                name.c_str(), v, baseline.c_str(), bv, ratio, target, g_device.c_str());
  } else {
    std::printf("%-44s %9.1f GB/s   %-18s %9.1f GB/s   ratio %.3f%s\n", name.c_str(), v,
                baseline.c_str(), bv, ratio,
                target > 0 ? (met ? "  (target met)" : "  (BELOW TARGET)") : "");
  }
}

void Bandwidth(uint32_t n, int reps) {
  Timer timer;
  cudaStream_t s = nullptr;
  for (auto layout : {sk::PagedLayout::kVllmFlashAttn, sk::PagedLayout::kFlashInfer,
                      sk::PagedLayout::kMla}) {
    sk::PagedKvSpec spec;
    spec.layout = layout;
    spec.dtype = layout == sk::PagedLayout::kMla ? sk::KvDtype::kBFloat16 : sk::KvDtype::kFloat16;
    spec.num_layers = 32;
    spec.block_size = 16;
    spec.num_kv_heads = layout == sk::PagedLayout::kMla ? 1 : 8;
    spec.head_dim = layout == sk::PagedLayout::kMla ? 576 : 128;
    spec.num_blocks = n * 2;
    const uint64_t bb = spec.block_shape().bytes(), total = bb * n;
    std::vector<std::unique_ptr<Dev>> layers;
    std::vector<void*> bases;
    for (uint32_t l = 0; l < spec.num_layers; ++l) {
      layers.push_back(std::make_unique<Dev>(spec.layer_bytes()));
      CUDA_OK(cudaMemset(layers.back()->p, l, spec.layer_bytes()));
      bases.push_back(layers.back()->p);
    }
    std::unique_ptr<sk::cuda::CudaKvMover> mover;
    if (!Check(sk::cuda::CudaKvMover::Create(spec, bases, &mover), "bandwidth mover")) return;
    std::vector<int32_t> ids(spec.num_blocks);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), std::mt19937(1));
    ids.resize(n);
    Dev dst(total), src(total);
    Pinned host(total);
    void* host_dev = nullptr;
    CUDA_OK(cudaHostGetDevicePointer(&host_dev, host.p, 0));
    std::vector<void*> dptrs, hptrs;
    for (uint32_t i = 0; i < n; ++i) {
      dptrs.push_back(dst.c() + i * bb);
      hptrs.push_back(static_cast<char*>(host_dev) + i * bb);
    }
    std::vector<const void*> cdptrs(dptrs.begin(), dptrs.end()), chptrs(hptrs.begin(), hptrs.end());
    const std::string tag = std::string(sk::PagedLayoutName(layout)) + "/" +
                            std::string(sk::KvDtypeName(spec.dtype)) + "/" +
                            std::to_string(bb >> 10) + "KiB_blocks/n=" + std::to_string(n);
    const double t_d2d = timer.MedianSeconds(reps, [&] {
      CUDA_OK(cudaMemcpyAsync(dst.p, src.p, total, cudaMemcpyDeviceToDevice, s));
    });
    const double t_h2d = timer.MedianSeconds(reps, [&] {
      CUDA_OK(cudaMemcpyAsync(dst.p, host.p, total, cudaMemcpyHostToDevice, s));
    });
    const double t_d2h = timer.MedianSeconds(reps, [&] {
      CUDA_OK(cudaMemcpyAsync(host.p, dst.p, total, cudaMemcpyDeviceToHost, s));
    });
    const double t_g = timer.MedianSeconds(reps, [&] { (void)mover->Gather(ids, dptrs, s); });
    const double t_s = timer.MedianSeconds(reps, [&] { (void)mover->Scatter(ids, cdptrs, s); });
    const double t_gh = timer.MedianSeconds(reps, [&] { (void)mover->Gather(ids, hptrs, s); });
    const double t_sh = timer.MedianSeconds(reps, [&] { (void)mover->Scatter(ids, chptrs, s); });
    CUDA_OK(cudaGetLastError());
    Report("gather_d2d/" + tag, total, t_g, "cudaMemcpy_d2d", total, t_d2d, 0.8);
    Report("scatter_d2d/" + tag, total, t_s, "cudaMemcpy_d2d", total, t_d2d, 0.8);
    Report("gather_to_pinned_host/" + tag, total, t_gh, "cudaMemcpy_d2h", total, t_d2h, 0);
    Report("scatter_from_pinned_host/" + tag, total, t_sh, "cudaMemcpy_h2d", total, t_h2d, 0);
    {
      // Head shards, as the client's paged store (gather into registered staging) and load
      // (scatter from the registered pool) move them; same bytes as the block rows above.
      const uint64_t heads = spec.num_kv_heads;
      sk::BlockShape sh = spec.block_shape();
      sh.num_kv_heads = 1;
      const uint64_t sb = sh.bytes();
      std::vector<void*> ds, hs;
      for (uint32_t i = 0; i < n; ++i)
        for (uint64_t h = 0; h < heads; ++h) {
          ds.push_back(dst.c() + (i * heads + h) * sb);
          hs.push_back(static_cast<char*>(host_dev) + (i * heads + h) * sb);
        }
      std::vector<const void*> cds(ds.begin(), ds.end()), chs(hs.begin(), hs.end());
      const uint32_t L = spec.num_layers;
      const double t_hg = timer.MedianSeconds(reps, [&] {
        (void)mover->GatherHeadShards(ids, ds, 0, L, s); });
      const double t_hs = timer.MedianSeconds(reps, [&] {
        (void)mover->ScatterHeadShards(ids, cds, 0, L, s); });
      const double t_hgh = timer.MedianSeconds(reps, [&] {
        (void)mover->GatherHeadShards(ids, hs, 0, L, s); });
      const double t_hsh = timer.MedianSeconds(reps, [&] {
        (void)mover->ScatterHeadShards(ids, chs, 0, L, s); });
      CUDA_OK(cudaGetLastError());
      Report("head_shard_gather_d2d/" + tag, total, t_hg, "cudaMemcpy_d2d", total, t_d2d, 0.8);
      Report("head_shard_scatter_d2d/" + tag, total, t_hs, "cudaMemcpy_d2d", total, t_d2d, 0.8);
      Report("head_shard_gather_to_pinned_host/" + tag, total, t_hgh, "cudaMemcpy_d2h", total,
             t_d2h, 0.8);
      Report("head_shard_scatter_from_pinned_host/" + tag, total, t_hsh, "cudaMemcpy_h2d", total,
             t_h2d, 0.8);
    }
    if (layout == sk::PagedLayout::kMla) continue;

    // Codecs over the same N blocks (KV-like content: 4 synthesized blocks, repeated).
    for (auto dtype : {sk::KvDtype::kFloat16, sk::KvDtype::kBFloat16}) {
      sk::BlockShape shape = spec.block_shape();
      shape.dtype = dtype;
      std::vector<std::byte> synth;
      sk::KvSynthOptions opt;
      if (!Check(sk::SynthesizeKvBlocks(shape, 4, opt, &synth), "synthesize")) return;
      for (uint32_t i = 0; i < n; ++i)
        CUDA_OK(cudaMemcpy(src.c() + i * bb, synth.data() + (i % 4) * bb, bb, cudaMemcpyHostToDevice));
      std::vector<const void*> ins;
      for (uint32_t i = 0; i < n; ++i) ins.push_back(src.c() + i * bb);
      for (auto codec : {sk::Codec::kFp8E4M3, sk::Codec::kInt8Group, sk::Codec::kInt4Kivi}) {
        std::unique_ptr<sk::cuda::CudaCodec> gc;
        if (!Check(sk::cuda::CudaCodec::Create(codec, shape, &gc), "codec")) continue;
        const uint64_t pb = sk::AlignUp16(gc->encoded_bytes());
        std::vector<void*> pays;
        for (uint32_t i = 0; i < n; ++i) pays.push_back(dst.c() + i * pb);  // pb < bb
        std::vector<const void*> cpays(pays.begin(), pays.end());
        Dev out(total);
        std::vector<void*> outs;
        for (uint32_t i = 0; i < n; ++i) outs.push_back(out.c() + i * bb);
        const double t_enc = timer.MedianSeconds(reps, [&] { (void)gc->Encode(ins, pays, nullptr, s); });
        const double t_dec = timer.MedianSeconds(reps, [&] { (void)gc->Decode(cpays, outs, s); });
        CUDA_OK(cudaGetLastError());
        const std::string ctag = std::string(sk::CodecName(codec)) + "/" +
                                 std::string(sk::KvDtypeName(dtype)) + "/" +
                                 std::to_string(bb >> 10) + "KiB_blocks/n=" + std::to_string(n);
        Report("quantize/" + ctag, total, t_enc, "cudaMemcpy_d2d", total, t_d2d, 0.7);
        Report("dequantize/" + ctag, total, t_dec, "cudaMemcpy_d2d", total, t_d2d, 0.7);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  uint32_t n = 256;
  int reps = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") quick = true;
    else if (a == "--json") g_json = true;
    else if (a == "--blocks" && i + 1 < argc) n = static_cast<uint32_t>(std::atoi(argv[++i]));
    else if (a == "--reps" && i + 1 < argc) reps = std::atoi(argv[++i]);
    else {
      std::printf("usage: %s [--quick] [--json] [--blocks N (256)] [--reps N (20)]\n", argv[0]);
      return 2;
    }
  }
  if (n == 0 || reps <= 0) {
    std::printf("--blocks and --reps must be positive\n");
    return 2;
  }
  const sk::KernelStatus dev = sk::cuda::DeviceAvailable();
  if (!dev.ok()) {
    std::printf("FAIL  no usable CUDA device: %s\n", dev.ToString().c_str());
    return 1;
  }
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  g_device = prop.name;
  int driver = 0, runtime = 0;
  CUDA_OK(cudaDriverGetVersion(&driver));
  CUDA_OK(cudaRuntimeGetVersion(&runtime));
  std::printf("# device: %s, sm_%d%d, %d SMs, %.1f GiB; driver %d, runtime %d\n", prop.name,
              prop.major, prop.minor, prop.multiProcessorCount,
              prop.totalGlobalMem / 1073741824.0, driver, runtime);
  CheckGatherScatter();
  CheckHeadShards();
  CheckCodecs();
  std::printf("# correctness: %s (%d failure%s)\n", g_failures ? "FAILED" : "all passed",
              g_failures, g_failures == 1 ? "" : "s");
  if (!quick) Bandwidth(n, reps);
  return g_failures ? 1 : 0;
}
