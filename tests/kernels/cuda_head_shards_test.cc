// CUDA head-shard gather/scatter (CudaKvMover::GatherHeadShards / ScatterHeadShards) against the
// CPU twins GatherHeadShardsCpu / ScatterHeadShardsCpu, byte for byte: every layout, fp16, bf16,
// fp8 and fp32, 16-byte and byte-wise paths, chunks of one and of several tiles, whole blocks and
// single layers, shards in device memory and in mapped pinned host memory (the paged store's
// staging), skipped (null) shards. Without a CUDA device the binary prints "SKIPPED: ..." and
// exits 77, which ctest reports as skipped.
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "strata_kernels/cuda_kernels.h"
#include "strata_kernels/gather_scatter.h"
#include "test_util.h"

namespace strata::kernels {
namespace {

void RequireDevice() {
  KernelStatus st = cuda::DeviceAvailable();
  if (!st.ok()) {
    std::printf("SKIPPED: no CUDA device (%s)\n", st.ToString().c_str());
    std::fflush(stdout);
    std::_Exit(77);
  }
}

// Device memory, or mapped pinned host memory (what the client's registered staging is).
struct Buf {
  Buf(size_t n, bool host) : size(n), host(host) {
    if (host) {
      REQUIRE(cudaHostAlloc(&hptr, n, cudaHostAllocMapped) == cudaSuccess);
      REQUIRE(cudaHostGetDevicePointer(&ptr, hptr, 0) == cudaSuccess);
    } else {
      REQUIRE(cudaMalloc(&ptr, n) == cudaSuccess);
    }
  }
  ~Buf() {
    if (host) cudaFreeHost(hptr);
    else cudaFree(ptr);
  }
  void Upload(const void* src) {
    REQUIRE(cudaMemcpy(ptr, src, size, cudaMemcpyDefault) == cudaSuccess);
  }
  std::vector<std::byte> Download() const {
    std::vector<std::byte> out(size);
    REQUIRE(cudaMemcpy(out.data(), ptr, size, cudaMemcpyDefault) == cudaSuccess);
    return out;
  }
  size_t size;
  bool host;
  void* ptr = nullptr;   // as the device sees it
  void* hptr = nullptr;  // host pointer of pinned memory
};

TEST_CASE("CUDA head-shard gather/scatter equal the CPU twins", "[kernels][gpu]") {
  RequireDevice();
  struct Case {
    uint32_t head_dim, block_size, heads, mla_head_dim;
  };
  // 128-wide heads: 16-byte path (rows of 64-512 bytes); 3-wide heads: the byte-wise path; 40
  // tokens of 8 fp32 heads: chunks of several 32 KiB tiles.
  const Case cases[] = {{128, 16, 4, 576}, {64, 16, 8, 512}, {128, 40, 8, 576}, {3, 5, 3, 77}};
  for (auto layout : {PagedLayout::kVllmFlashAttn, PagedLayout::kFlashInfer, PagedLayout::kMla})
    for (auto dtype : {KvDtype::kFloat16, KvDtype::kBFloat16, KvDtype::kFloat8E4M3,
                       KvDtype::kFloat32})
      for (const Case& k : cases)
        for (bool host : {false, true}) {
          PagedKvSpec spec;
          spec.layout = layout;
          spec.dtype = dtype;
          spec.num_layers = 3;
          spec.num_blocks = 20;
          spec.block_size = k.block_size;
          spec.num_kv_heads = layout == PagedLayout::kMla ? 1 : k.heads;
          spec.head_dim = layout == PagedLayout::kMla ? k.mla_head_dim : k.head_dim;
          INFO(PagedLayoutName(layout) << " " << KvDtypeName(dtype) << " D " << spec.head_dim
                                       << " H " << spec.num_kv_heads << " tokens "
                                       << spec.block_size << (host ? " pinned host" : " device"));
          testing::HostCache cache(spec);
          std::vector<std::unique_ptr<Buf>> dlayers;
          std::vector<void*> bases;
          for (uint32_t l = 0; l < spec.num_layers; ++l) {
            testing::FillPattern(cache.layers[l], l + 11);
            dlayers.push_back(std::make_unique<Buf>(spec.layer_bytes(), false));
            dlayers.back()->Upload(cache.layers[l].data());
            bases.push_back(dlayers.back()->ptr);
          }
          std::unique_ptr<cuda::CudaKvMover> mover;
          REQUIRE(cuda::CudaKvMover::Create(spec, bases, &mover).ok());
          BlockShape shard = spec.block_shape();
          shard.num_kv_heads = 1;
          const uint64_t sb = shard.bytes(), heads = spec.num_kv_heads;
          const std::vector<int32_t> ids = {19, 0, 7, 3, 12};
          const size_t n = ids.size() * heads;
          Buf dshards(sb * n, host);
          std::vector<void*> dptrs;
          for (size_t s = 0; s < n; ++s) dptrs.push_back(static_cast<char*>(dshards.ptr) + s * sb);

          // Whole blocks, then layer by layer into a second set: both equal the CPU twin.
          std::vector<std::byte> ref(sb * n);
          std::vector<std::span<std::byte>> rspans;
          for (size_t s = 0; s < n; ++s) rspans.emplace_back(ref.data() + s * sb, sb);
          auto cl = cache.ConstViews();
          REQUIRE(GatherHeadShardsCpu(spec, cl, ids, rspans, 0, spec.num_layers).ok());
          REQUIRE(mover->GatherHeadShards(ids, dptrs, 0, spec.num_layers, nullptr).ok());
          REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
          REQUIRE(dshards.Download() == ref);
          std::vector<std::byte> zeros(sb * n);
          dshards.Upload(zeros.data());
          for (uint32_t l = 0; l < spec.num_layers; ++l)
            REQUIRE(mover->GatherHeadShards(ids, dptrs, l, l + 1, nullptr).ok());
          REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
          REQUIRE(dshards.Download() == ref);

          // Skipped shards stay as they were; a single layer lands at its own offset only.
          dshards.Upload(zeros.data());
          std::vector<void*> some = dptrs;
          for (size_t s = 0; s < n; s += 2) some[s] = nullptr;
          REQUIRE(mover->GatherHeadShards(ids, some, 1, 2, nullptr).ok());
          REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
          {
            std::vector<std::byte> want(sb * n);
            const uint64_t lb = sb / spec.num_layers;  // one layer of a shard
            for (size_t s = 1; s < n; s += 2)
              std::memcpy(want.data() + s * sb + lb, ref.data() + s * sb + lb, lb);
            REQUIRE(dshards.Download() == want);
          }

          // Scatter fresh shards into other pages, on both sides; then one layer more.
          std::vector<std::byte> fresh(sb * n);
          testing::FillPattern(fresh, 99);
          dshards.Upload(fresh.data());
          const std::vector<int32_t> to = {1, 18, 5, 9, 10};
          std::vector<const void*> sptrs(dptrs.begin(), dptrs.end());
          REQUIRE(mover->ScatterHeadShards(to, sptrs, 0, spec.num_layers, nullptr).ok());
          REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
          std::vector<std::span<const std::byte>> fspans;
          for (size_t s = 0; s < n; ++s) fspans.emplace_back(fresh.data() + s * sb, sb);
          auto wl = cache.Views();
          REQUIRE(ScatterHeadShardsCpu(spec, wl, to, fspans, 0, spec.num_layers).ok());
          for (uint32_t l = 0; l < spec.num_layers; ++l)
            REQUIRE(dlayers[l]->Download() == cache.layers[l]);
          testing::FillPattern(fresh, 5);
          dshards.Upload(fresh.data());
          REQUIRE(mover->ScatterHeadShards(ids, sptrs, 2, 3, nullptr).ok());
          REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
          REQUIRE(ScatterHeadShardsCpu(spec, wl, ids, fspans, 2, 3).ok());
          for (uint32_t l = 0; l < spec.num_layers; ++l)
            REQUIRE(dlayers[l]->Download() == cache.layers[l]);

          // Bad arguments enqueue nothing.
          CHECK(mover->GatherHeadShards(std::vector<int32_t>{0, 20}, dptrs, 0, 1, nullptr).code() ==
                KernelCode::kInvalidArgument);
          CHECK(mover->GatherHeadShards(ids, dptrs, 2, 4, nullptr).code() ==
                KernelCode::kInvalidArgument);
          CHECK(mover->GatherHeadShards(ids, std::span<void* const>(dptrs).first(n - 1), 0, 1,
                                        nullptr)
                    .code() == KernelCode::kInvalidArgument);
        }
}

}  // namespace
}  // namespace strata::kernels
