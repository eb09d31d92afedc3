// CUDA gather/scatter (cuda_kernels.h): one kernel per call moves every (block, layer, plane)
// chunk. Each CTA iteration copies one tile of a chunk with 16-byte loads issued before the
// stores (kUnroll per thread) and walks the tiles grid-stride.
#include <string>

#include "cuda_util.h"
#include "strata_kernels/cuda_kernels.h"

namespace strata::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;

struct MoveParams {
  const uint64_t* layers;  // num_layers engine layer base addresses
  const uint64_t* desc;    // per block: engine block id, Strata block address
  uint64_t chunk_bytes;
  uint64_t tiles_per_chunk;
  uint64_t total_tiles;
  uint32_t num_layers;
  uint32_t planes;
  uint32_t pool_blocks;
  PagedLayout layout;
};

template <bool kGather, bool kVec>
__global__ void __launch_bounds__(kThreads) MoveKernel(MoveParams p) {
  constexpr uint64_t kElem = kVec ? 16 : 1;
  const uint64_t tile_bytes = kElem * kThreads * kUnroll;
  const uint32_t lps = p.num_layers * p.planes;
  for (uint64_t g = blockIdx.x; g < p.total_tiles; g += gridDim.x) {
    const uint64_t item = g / p.tiles_per_chunk;
    const uint64_t tile = g - item * p.tiles_per_chunk;
    const uint64_t i = item / lps;
    const uint32_t lp = static_cast<uint32_t>(item - i * lps);
    const uint32_t l = lp / p.planes, pl = lp - l * p.planes;
    const uint64_t block_id = p.desc[2 * i];
    char* strata = reinterpret_cast<char*>(p.desc[2 * i + 1]) + uint64_t{lp} * p.chunk_bytes;
    char* engine = reinterpret_cast<char*>(p.layers[l]) +
                   EngineChunkIndex(p.layout, p.pool_blocks, block_id, pl) * p.chunk_bytes;
    const char* src = kGather ? engine : strata;
    char* dst = kGather ? strata : engine;
    const uint64_t base = tile * tile_bytes;
    if constexpr (kVec) {
      uint4 r[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const uint64_t off = base + (static_cast<uint64_t>(u) * kThreads + threadIdx.x) * 16;
        if (off < p.chunk_bytes) r[u] = *reinterpret_cast<const uint4*>(src + off);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const uint64_t off = base + (static_cast<uint64_t>(u) * kThreads + threadIdx.x) * 16;
        if (off < p.chunk_bytes) *reinterpret_cast<uint4*>(dst + off) = r[u];
      }
    } else {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const uint64_t off = base + static_cast<uint64_t>(u) * kThreads + threadIdx.x;
        if (off < p.chunk_bytes) dst[off] = src[off];
      }
    }
  }
}

}  // namespace

KernelStatus DeviceAvailable() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) return CudaError(e, "cudaGetDeviceCount");
  if (n == 0) return KernelStatus::DeviceError("no CUDA device");
  return KernelStatus::Ok();
}

CudaKvMover::~CudaKvMover() {
  if (d_layers_) (void)cudaFree(d_layers_);
}

KernelStatus CudaKvMover::Create(const PagedKvSpec& spec, std::span<void* const> layer_bases,
                                 std::unique_ptr<CudaKvMover>* out) {
  STRATA_KERNELS_RETURN_IF_ERROR(ValidatePagedKvSpec(spec));
  if (layer_bases.size() != spec.num_layers)
    return KernelStatus::InvalidArgument("got " + std::to_string(layer_bases.size()) +
                                         " layer pointers for " + std::to_string(spec.num_layers) +
                                         " layers");
  std::unique_ptr<CudaKvMover> m(new CudaKvMover());
  m->spec_ = spec;
  m->layers_aligned_ = true;
  std::vector<uint64_t> addrs(spec.num_layers);
  for (uint32_t l = 0; l < spec.num_layers; ++l) {
    if (layer_bases[l] == nullptr)
      return KernelStatus::InvalidArgument("layer " + std::to_string(l) + " pointer is null");
    addrs[l] = reinterpret_cast<uint64_t>(layer_bases[l]);
    if (addrs[l] % 16) m->layers_aligned_ = false;
  }
  int dev = 0;
  STRATA_KERNELS_RETURN_IF_ERROR(CudaError(cudaGetDevice(&dev), "cudaGetDevice"));
  STRATA_KERNELS_RETURN_IF_ERROR(CudaError(
      cudaDeviceGetAttribute(&m->sm_count_, cudaDevAttrMultiProcessorCount, dev),
      "cudaDeviceGetAttribute"));
  STRATA_KERNELS_RETURN_IF_ERROR(
      CudaError(cudaMalloc(&m->d_layers_, addrs.size() * 8), "cudaMalloc(layer table)"));
  STRATA_KERNELS_RETURN_IF_ERROR(CudaError(
      cudaMemcpy(m->d_layers_, addrs.data(), addrs.size() * 8, cudaMemcpyHostToDevice),
      "cudaMemcpy(layer table)"));
  *out = std::move(m);
  return KernelStatus::Ok();
}

KernelStatus CudaKvMover::Gather(std::span<const int32_t> block_ids,
                                 std::span<void* const> dst_blocks, cudaStream_t stream) {
  return Launch(true, block_ids,
                std::span<const void* const>(
                    reinterpret_cast<const void* const*>(dst_blocks.data()), dst_blocks.size()),
                stream);
}

KernelStatus CudaKvMover::Scatter(std::span<const int32_t> block_ids,
                                  std::span<const void* const> src_blocks, cudaStream_t stream) {
  return Launch(false, block_ids, src_blocks, stream);
}

KernelStatus CudaKvMover::Launch(bool gather, std::span<const int32_t> block_ids,
                                 std::span<const void* const> blocks, cudaStream_t stream) {
  if (block_ids.size() != blocks.size())
    return KernelStatus::InvalidArgument(std::to_string(block_ids.size()) + " block ids for " +
                                         std::to_string(blocks.size()) + " block buffers");
  if (block_ids.empty()) return KernelStatus::Ok();
  const BlockShape shape = spec_.block_shape();
  bool aligned = layers_aligned_ && shape.chunk_bytes() % 16 == 0;
  host_desc_.resize(2 * block_ids.size());
  for (size_t i = 0; i < block_ids.size(); ++i) {
    if (block_ids[i] < 0 || static_cast<uint32_t>(block_ids[i]) >= spec_.num_blocks)
      return KernelStatus::InvalidArgument("block id " + std::to_string(block_ids[i]) +
                                           " (entry " + std::to_string(i) +
                                           ") is outside [0, " +
                                           std::to_string(spec_.num_blocks) + ")");
    if (blocks[i] == nullptr)
      return KernelStatus::InvalidArgument("block buffer " + std::to_string(i) + " is null");
    host_desc_[2 * i] = static_cast<uint64_t>(block_ids[i]);
    host_desc_[2 * i + 1] = reinterpret_cast<uint64_t>(blocks[i]);
    if (host_desc_[2 * i + 1] % 16) aligned = false;
  }
  void* d_desc = nullptr;
  STRATA_KERNELS_RETURN_IF_ERROR(
      UploadDescriptors(host_desc_.data(), host_desc_.size() * 8, stream, &d_desc));

  MoveParams p;
  p.layers = static_cast<const uint64_t*>(d_layers_);
  p.desc = static_cast<const uint64_t*>(d_desc);
  p.chunk_bytes = shape.chunk_bytes();
  const uint64_t tile_bytes = uint64_t{aligned ? 16u : 1u} * kThreads * kUnroll;
  p.tiles_per_chunk = (p.chunk_bytes + tile_bytes - 1) / tile_bytes;
  p.total_tiles = p.tiles_per_chunk * block_ids.size() * shape.num_chunks();
  p.num_layers = spec_.num_layers;
  p.planes = shape.planes;
  p.pool_blocks = spec_.num_blocks;
  p.layout = spec_.layout;
  const uint64_t max_grid = uint64_t(sm_count_ > 0 ? sm_count_ : 1) * 16;
  const unsigned grid = static_cast<unsigned>(p.total_tiles < max_grid ? p.total_tiles : max_grid);
  if (gather) {
    if (aligned) MoveKernel<true, true><<<grid, kThreads, 0, stream>>>(p);
    else MoveKernel<true, false><<<grid, kThreads, 0, stream>>>(p);
  } else {
    if (aligned) MoveKernel<false, true><<<grid, kThreads, 0, stream>>>(p);
    else MoveKernel<false, false><<<grid, kThreads, 0, stream>>>(p);
  }
  KernelStatus launched = CudaError(cudaGetLastError(), gather ? "gather launch" : "scatter launch");
  KernelStatus freed = FreeDescriptors(d_desc, stream);
  if (!launched.ok()) return launched;
  return freed;
}

}  // namespace strata::kernels::cuda
