// CUDA kernels against the CPU reference: gather/scatter byte-exact for every layout and dtype,
// lossy codecs bit-exact (payloads and decoded blocks), flags for non-finite input. Needs a CUDA
// device; without one every case prints "SKIPPED: no CUDA device" and exits 77 (ctest: skipped).
#include "strata_kernels/cuda_kernels.h"

#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "strata_kernels/codec.h"
#include "strata_kernels/gather_scatter.h"
#include "strata_kernels/kv_synth.h"
#include "test_util.h"

namespace strata::kernels {
namespace {

// Without a device the binary prints "SKIPPED: ..." and exits 77: ctest reports it skipped
// (SKIP_RETURN_CODE), never passed.
bool HaveDevice() {
  KernelStatus st = cuda::DeviceAvailable();
  if (!st.ok()) {
    std::printf("SKIPPED: no CUDA device (%s)\n", st.ToString().c_str());
    std::fflush(stdout);
    std::_Exit(77);
  }
  return true;
}

struct DeviceBuf {
  explicit DeviceBuf(size_t n) : size(n) { REQUIRE(cudaMalloc(&ptr, n) == cudaSuccess); }
  ~DeviceBuf() { cudaFree(ptr); }
  void Upload(const void* src) { REQUIRE(cudaMemcpy(ptr, src, size, cudaMemcpyHostToDevice) == cudaSuccess); }
  std::vector<std::byte> Download() const {
    std::vector<std::byte> out(size);
    REQUIRE(cudaMemcpy(out.data(), ptr, size, cudaMemcpyDeviceToHost) == cudaSuccess);
    return out;
  }
  void* ptr = nullptr;
  size_t size;
};

TEST_CASE("CUDA gather/scatter equal the CPU reference", "[kernels][gpu]") {
  if (!HaveDevice()) return;
  for (auto layout : {PagedLayout::kVllmFlashAttn, PagedLayout::kFlashInfer, PagedLayout::kMla}) {
    for (auto dtype : {KvDtype::kFloat16, KvDtype::kBFloat16, KvDtype::kFloat8E4M3}) {
      // {head_dim, tokens per block, MLA head_dim}. 3-wide heads make chunks that are not a
      // multiple of 16 bytes (byte-wise path); 40 / 41 tokens make chunks of several 32 KiB tiles
      // (vLLM/FlashInfer fp16 40 KiB, MLA 45 KiB aligned and 80 KiB byte-wise).
      struct Case {
        uint32_t head_dim, block_size, mla_head_dim;
      };
      for (const Case& k : {Case{128, 16, 576}, Case{128, 40, 576}, Case{3, 5, 77},
                            Case{3, 41, 1001}}) {
        PagedKvSpec spec;
        spec.layout = layout;
        spec.dtype = dtype;
        spec.num_layers = 3;
        spec.num_blocks = 20;
        const bool odd = k.head_dim == 3;
        spec.block_size = k.block_size;
        spec.num_kv_heads = layout == PagedLayout::kMla ? 1 : (odd ? 3 : 4);
        spec.head_dim = layout == PagedLayout::kMla ? k.mla_head_dim : k.head_dim;
        INFO(PagedLayoutName(layout) << " " << KvDtypeName(dtype) << " D " << spec.head_dim
                                     << " tokens " << spec.block_size);
        testing::HostCache cache(spec);
        std::vector<std::unique_ptr<DeviceBuf>> dlayers;
        std::vector<void*> bases;
        for (uint32_t l = 0; l < spec.num_layers; ++l) {
          testing::FillPattern(cache.layers[l], l + 7);
          dlayers.push_back(std::make_unique<DeviceBuf>(spec.layer_bytes()));
          dlayers.back()->Upload(cache.layers[l].data());
          bases.push_back(dlayers.back()->ptr);
        }
        std::unique_ptr<cuda::CudaKvMover> mover;
        REQUIRE(cuda::CudaKvMover::Create(spec, bases, &mover).ok());
        const uint64_t bb = spec.block_shape().bytes();
        const std::vector<int32_t> ids = {19, 0, 7, 3, 12};
        DeviceBuf dblocks(bb * ids.size());
        std::vector<void*> dptrs;
        for (size_t i = 0; i < ids.size(); ++i) dptrs.push_back(static_cast<char*>(dblocks.ptr) + i * bb);
        REQUIRE(mover->Gather(ids, dptrs, nullptr).ok());
        REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
        std::vector<std::byte> ref(bb * ids.size());
        std::vector<std::span<std::byte>> rspans;
        for (size_t i = 0; i < ids.size(); ++i) rspans.emplace_back(ref.data() + i * bb, bb);
        auto cl = cache.ConstViews();
        REQUIRE(GatherBlocksCpu(spec, cl, ids, rspans).ok());
        REQUIRE(dblocks.Download() == ref);

        // Scatter new contents into other blocks, on both sides.
        std::vector<std::byte> fresh(bb * ids.size());
        testing::FillPattern(fresh, 99);
        dblocks.Upload(fresh.data());
        const std::vector<int32_t> to = {1, 18, 5, 9, 10};
        std::vector<const void*> sptrs(dptrs.begin(), dptrs.end());
        REQUIRE(mover->Scatter(to, sptrs, nullptr).ok());
        REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
        std::vector<std::span<const std::byte>> fspans;
        for (size_t i = 0; i < ids.size(); ++i) fspans.emplace_back(fresh.data() + i * bb, bb);
        auto wl = cache.Views();
        REQUIRE(ScatterBlocksCpu(spec, wl, to, fspans).ok());
        for (uint32_t l = 0; l < spec.num_layers; ++l) REQUIRE(dlayers[l]->Download() == cache.layers[l]);

        const std::vector<int32_t> bad = {0, 20};
        std::vector<void*> two(dptrs.begin(), dptrs.begin() + 2);
        CHECK(mover->Gather(bad, two, nullptr).code() == KernelCode::kInvalidArgument);
      }
    }
  }
}

TEST_CASE("CUDA lossy codecs are bit-exact with the CPU reference", "[kernels][gpu]") {
  if (!HaveDevice()) return;
  const BlockShape shapes[] = {{4, 2, 16, 8, 128, KvDtype::kFloat16},
                               {3, 2, 16, 2, 80, KvDtype::kBFloat16},
                               {2, 1, 16, 1, 576, KvDtype::kBFloat16}};
  for (const BlockShape& shape : shapes) {
    constexpr uint32_t kBlocks = 3;
    KvSynthOptions opt;
    opt.hidden_dim = 128;
    std::vector<std::byte> data;
    REQUIRE(SynthesizeKvBlocks(shape, kBlocks, opt, &data).ok());
    for (Codec codec : {Codec::kFp8E4M3, Codec::kInt8Group, Codec::kInt4Kivi}) {
      INFO(CodecName(codec) << " D " << shape.head_dim << " " << KvDtypeName(shape.dtype));
      std::unique_ptr<cuda::CudaCodec> gc;
      REQUIRE(cuda::CudaCodec::Create(codec, shape, &gc).ok());
      const uint64_t pb = AlignUp16(gc->encoded_bytes()), bb = shape.bytes();
      DeviceBuf din(bb * kBlocks), dpay(pb * kBlocks), dout(bb * kBlocks), dflags(4 * kBlocks);
      din.Upload(data.data());
      std::vector<const void*> ins;
      std::vector<void*> pays, outs;
      for (uint32_t i = 0; i < kBlocks; ++i) {
        ins.push_back(static_cast<char*>(din.ptr) + i * bb);
        pays.push_back(static_cast<char*>(dpay.ptr) + i * pb);
        outs.push_back(static_cast<char*>(dout.ptr) + i * bb);
      }
      REQUIRE(gc->Encode(ins, pays, static_cast<uint32_t*>(dflags.ptr), nullptr).ok());
      std::vector<const void*> cpays(pays.begin(), pays.end());
      REQUIRE(gc->Decode(cpays, outs, nullptr).ok());
      REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
      const auto gpay = dpay.Download(), gout = dout.Download(), gflags = dflags.Download();
      for (uint32_t i = 0; i < kBlocks; ++i) {
        std::vector<uint64_t> cpay((gc->encoded_bytes() + 7) / 8);
        std::span<std::byte> cspan(reinterpret_cast<std::byte*>(cpay.data()), gc->encoded_bytes());
        std::span<const std::byte> block(data.data() + i * bb, bb);
        REQUIRE(QuantizeBlockCpu(codec, shape, block, cspan).ok());
        REQUIRE(std::memcmp(cspan.data(), gpay.data() + i * pb, gc->encoded_bytes()) == 0);
        std::vector<std::byte> cout(bb);
        REQUIRE(DequantizeBlockCpu(codec, shape, cspan, cout).ok());
        REQUIRE(std::memcmp(cout.data(), gout.data() + i * bb, bb) == 0);
        uint32_t f;
        std::memcpy(&f, gflags.data() + 4 * i, 4);
        CHECK(f == 0);
      }
      // A NaN in block 1 is flagged for that block only. (0x7e00 is a NaN in fp16 but a finite
      // 2^125 in bf16, whose quiet NaN is 0x7fc0.)
      auto poisoned = data;
      const uint16_t nan = shape.dtype == KvDtype::kBFloat16 ? 0x7fc0 : 0x7e00;
      std::memcpy(poisoned.data() + bb + 2 * 333, &nan, 2);
      din.Upload(poisoned.data());
      REQUIRE(gc->Encode(ins, pays, static_cast<uint32_t*>(dflags.ptr), nullptr).ok());
      REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
      const auto flags = dflags.Download();
      uint32_t f[kBlocks];
      std::memcpy(f, flags.data(), sizeof f);
      CHECK(f[0] == 0);
      CHECK(f[1] != 0);
      CHECK(f[2] == 0);
    }
  }
}

}  // namespace
}  // namespace strata::kernels
