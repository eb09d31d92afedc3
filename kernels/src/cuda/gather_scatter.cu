// CUDA gather/scatter (cuda_kernels.h): one kernel per call moves every (block, layer, plane)
// chunk, its block descriptors passed in the launch's parameter buffer (cuda_util.h; calls of
// more than 1024 blocks upload them). A chunk is cut into as few equal tiles as fit
// kThreads x kUnroll elements (16-byte vectors, or bytes on the unaligned path), so a chunk of up
// to 32 KiB is one tile (an MLA chunk of 18 KiB: 4.5 vectors per thread). 16 CTAs per SM walk the
// tiles grid-stride; each iteration issues all its loads, then resolves the next tile's
// descriptors, then stores, so the descriptor lookups overlap the data loads. KV bytes are
// touched once: loads and stores carry the streaming (evict-first) cache hint. Index arithmetic
// is 32-bit (Launch bounds it).
#include <string>
#include <type_traits>
#include <vector>

#include "cuda_util.h"
#include "strata_kernels/cuda_kernels.h"

namespace strata::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kVecUnroll = 8;   // 16-byte vectors in flight per thread: tiles up to 32 KiB
constexpr int kByteUnroll = 4;  // byte-wise path: tiles up to 1 KiB

struct MoveParams {
  const uint64_t* layers;  // num_layers engine layer base addresses
  const ulonglong2* desc;  // per block {engine block id, Strata block address}, or inline
  uint64_t chunk_bytes;
  uint32_t chunk_elems;  // chunk length in elements (16-byte vectors or bytes)
  uint32_t tile_elems;   // ceil(chunk_elems / tiles_per_chunk) <= kThreads * unroll
  uint32_t tiles_per_chunk;
  uint32_t total_tiles;       // blocks * num_layers * planes * tiles_per_chunk <= 2^31
  uint32_t chunks_per_block;  // num_layers * planes
  uint32_t planes;
  uint32_t pool_blocks;
  PagedLayout layout;
};

// Where tile g reads and writes: element range [begin, end) of the chunk at src / dst.
struct Tile {
  const char* src;
  char* dst;
  uint32_t begin;
  uint32_t end;
};

template <bool kGather, uint32_t kN>
__device__ __forceinline__ Tile LocateTile(const MoveParams& p, const InlineDesc<kN>& inl,
                                           uint32_t g) {
  const uint32_t item = g / p.tiles_per_chunk;  // (block, layer, plane)
  const uint32_t tile = g - item * p.tiles_per_chunk;
  const uint32_t i = item / p.chunks_per_block;
  const uint32_t lp = item - i * p.chunks_per_block;
  const uint32_t l = lp / p.planes, pl = lp - l * p.planes;
  const ulonglong2 d = LoadDesc(inl, p.desc, i);
  char* strata = reinterpret_cast<char*>(d.y) + uint64_t{lp} * p.chunk_bytes;
  char* engine = reinterpret_cast<char*>(__ldg(&p.layers[l])) +
                 EngineChunkIndex(p.layout, p.pool_blocks, d.x, pl) * p.chunk_bytes;
  Tile t;
  t.src = kGather ? engine : strata;
  t.dst = kGather ? strata : engine;
  t.begin = tile * p.tile_elems;
  t.end = min(t.begin + p.tile_elems, p.chunk_elems);
  return t;
}

template <bool kGather, bool kVec, uint32_t kN>
__global__ void __launch_bounds__(kThreads) MoveKernel(MoveParams p, InlineDesc<kN> inl) {
  using Elem = std::conditional_t<kVec, uint4, unsigned char>;
  constexpr int kUnroll = kVec ? kVecUnroll : kByteUnroll;
  uint32_t g = blockIdx.x;
  if (g >= p.total_tiles) return;
  Tile t = LocateTile<kGather>(p, inl, g);
  for (;;) {
    const Elem* src = reinterpret_cast<const Elem*>(t.src);
    Elem* dst = reinterpret_cast<Elem*>(t.dst);
    Elem r[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const uint32_t e = t.begin + u * kThreads + threadIdx.x;
      if (e < t.end) r[u] = __ldcs(src + e);
    }
    const uint32_t next = g + gridDim.x;
    const bool more = next < p.total_tiles;
    Tile n = t;
    if (more) n = LocateTile<kGather>(p, inl, next);  // overlaps the loads above
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const uint32_t e = t.begin + u * kThreads + threadIdx.x;
      if (e < t.end) __stcs(dst + e, r[u]);
    }
    if (!more) break;
    g = next;
    t = n;
  }
}

template <bool kGather, bool kVec>
KernelStatus LaunchMove(MoveParams p, unsigned grid, const std::vector<uint64_t>& desc,
                        cudaStream_t stream) {
  return LaunchWithDesc(reinterpret_cast<const ulonglong2*>(desc.data()), desc.size() / 2, stream,
                        kGather ? "gather launch" : "scatter launch",
                        [&](const auto& inl, const ulonglong2* dev) {
                          constexpr uint32_t kN = std::remove_cvref_t<decltype(inl)>::kSize;
                          p.desc = dev;
                          MoveKernel<kGather, kVec, kN><<<grid, kThreads, 0, stream>>>(p, inl);
                        });
}


// --- Head shards (GatherHeadShardsCpu's layout) ---
//
// Work is cut as for whole blocks: each (block, layer, plane) engine chunk [token][head][dim] is
// read (gather) or written (scatter) contiguously in tiles of at most kThreads x unroll elements;
// element e of the chunk is (token t, head h, column c) and lives in shard (i, h) at row t of
// that shard's (layer, plane) chunk:
//   engine:  chunk + e                           e = (t * heads + h) * row + c
//   shard:   shards[i * heads + h] + lp * shard_chunk + t * row + c,   lp = layer * planes + plane
// (in elements: 16-byte vectors or bytes). Rows are head_dim elements, 128-256 bytes for real
// shapes, so the shard side is written (or read) in runs of whole rows.
struct ShardParams {
  const uint64_t* layers;  // num_layers engine layer base addresses
  const ulonglong2* desc;  // per shard {engine block id, shard address or 0: skip}, or inline
  uint64_t chunk_bytes;        // engine chunk: tokens * heads * row bytes
  uint64_t shard_chunk_bytes;  // a shard's (layer, plane) chunk: tokens * row bytes
  uint32_t row_elems;          // head_dim in elements
  uint32_t token_elems;        // heads * row_elems
  uint32_t chunk_elems;        // tokens * token_elems
  uint32_t tile_elems;
  uint32_t tiles_per_chunk;
  uint32_t total_tiles;        // blocks * chunks_per_block * tiles_per_chunk <= 2^31
  uint32_t chunks_per_block;   // (layer_end - layer_begin) * planes
  uint32_t first_chunk;        // layer_begin * planes
  uint32_t planes;
  uint32_t heads;
  uint32_t pool_blocks;
  PagedLayout layout;
};

template <bool kGather, bool kVec, uint32_t kN>
__global__ void __launch_bounds__(kThreads) ShardKernel(ShardParams p, InlineDesc<kN> inl) {
  using Elem = std::conditional_t<kVec, uint4, unsigned char>;
  constexpr int kUnroll = kVec ? kVecUnroll : kByteUnroll;
  for (uint32_t g = blockIdx.x; g < p.total_tiles; g += gridDim.x) {
    const uint32_t item = g / p.tiles_per_chunk;
    const uint32_t tile = g - item * p.tiles_per_chunk;
    const uint32_t i = item / p.chunks_per_block;
    const uint32_t lp = p.first_chunk + (item - i * p.chunks_per_block);
    const uint32_t l = lp / p.planes, pl = lp - l * p.planes;
    const uint64_t block = LoadDesc(inl, p.desc, i * p.heads).x;  // every head: the same page
    Elem* engine = reinterpret_cast<Elem*>(
        reinterpret_cast<char*>(__ldg(&p.layers[l])) +
        EngineChunkIndex(p.layout, p.pool_blocks, block, pl) * p.chunk_bytes);
    const uint32_t begin = tile * p.tile_elems;
    const uint32_t end = min(begin + p.tile_elems, p.chunk_elems);
    Elem* shard[kUnroll];
    Elem r[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const uint32_t e = begin + u * kThreads + threadIdx.x;
      shard[u] = nullptr;
      if (e < end) {
        const uint32_t t = e / p.token_elems;
        const uint32_t in_token = e - t * p.token_elems;
        const uint32_t h = in_token / p.row_elems;
        const uint32_t c = in_token - h * p.row_elems;
        const uint64_t base = LoadDesc(inl, p.desc, i * p.heads + h).y;
        if (base != 0) {
          shard[u] = reinterpret_cast<Elem*>(reinterpret_cast<char*>(base) +
                                             uint64_t{lp} * p.shard_chunk_bytes) +
                     (uint64_t{t} * p.row_elems + c);
          r[u] = kGather ? __ldcs(engine + e) : __ldcs(shard[u]);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (shard[u] == nullptr) continue;
      const uint32_t e = begin + u * kThreads + threadIdx.x;
      if (kGather) {
        __stcs(shard[u], r[u]);
      } else {
        __stcs(engine + e, r[u]);
      }
    }
  }
}

template <bool kGather, bool kVec>
KernelStatus LaunchShardMove(ShardParams p, unsigned grid, const std::vector<uint64_t>& desc,
                             cudaStream_t stream) {
  return LaunchWithDesc(reinterpret_cast<const ulonglong2*>(desc.data()), desc.size() / 2, stream,
                        kGather ? "head-shard gather launch" : "head-shard scatter launch",
                        [&](const auto& inl, const ulonglong2* dev) {
                          constexpr uint32_t kN = std::remove_cvref_t<decltype(inl)>::kSize;
                          p.desc = dev;
                          ShardKernel<kGather, kVec, kN><<<grid, kThreads, 0, stream>>>(p, inl);
                        });
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
  const uint64_t unroll = aligned ? kVecUnroll : kByteUnroll;
  const uint64_t chunk_elems = aligned ? shape.chunk_bytes() / 16 : shape.chunk_bytes();
  const uint64_t tiles_per_chunk = (chunk_elems + kThreads * unroll - 1) / (kThreads * unroll);
  const uint64_t total_tiles = tiles_per_chunk * block_ids.size() * shape.num_chunks();
  if (total_tiles > (uint64_t{1} << 31))  // chunk_elems < 2^32 (ValidateBlockShape)
    return KernelStatus::InvalidArgument("gather/scatter of " + std::to_string(block_ids.size()) +
                                         " blocks is too large for one call; split it");
  MoveParams p;
  p.layers = static_cast<const uint64_t*>(d_layers_);
  p.desc = nullptr;
  p.chunk_bytes = shape.chunk_bytes();
  p.chunk_elems = static_cast<uint32_t>(chunk_elems);
  p.tiles_per_chunk = static_cast<uint32_t>(tiles_per_chunk);
  p.tile_elems = static_cast<uint32_t>((chunk_elems + tiles_per_chunk - 1) / tiles_per_chunk);
  p.total_tiles = static_cast<uint32_t>(total_tiles);
  p.chunks_per_block = static_cast<uint32_t>(shape.num_chunks());
  p.planes = shape.planes;
  p.pool_blocks = spec_.num_blocks;
  p.layout = spec_.layout;
  // 16 CTAs per SM, 4 of them resident (64 registers): oversubscribing measured 2-4 % faster on
  // an H100 than a grid of exactly the resident CTAs.
  const uint64_t max_grid = uint64_t(sm_count_ > 0 ? sm_count_ : 1) * 16;
  const unsigned grid = static_cast<unsigned>(total_tiles < max_grid ? total_tiles : max_grid);
  if (gather) {
    return aligned ? LaunchMove<true, true>(p, grid, host_desc_, stream)
                   : LaunchMove<true, false>(p, grid, host_desc_, stream);
  }
  return aligned ? LaunchMove<false, true>(p, grid, host_desc_, stream)
                 : LaunchMove<false, false>(p, grid, host_desc_, stream);
}


KernelStatus CudaKvMover::GatherHeadShards(std::span<const int32_t> block_ids,
                                           std::span<void* const> dst_shards,
                                           uint32_t layer_begin, uint32_t layer_end,
                                           cudaStream_t stream) {
  return LaunchShards(true, block_ids,
                      std::span<const void* const>(
                          reinterpret_cast<const void* const*>(dst_shards.data()),
                          dst_shards.size()),
                      layer_begin, layer_end, stream);
}

KernelStatus CudaKvMover::ScatterHeadShards(std::span<const int32_t> block_ids,
                                            std::span<const void* const> src_shards,
                                            uint32_t layer_begin, uint32_t layer_end,
                                            cudaStream_t stream) {
  return LaunchShards(false, block_ids, src_shards, layer_begin, layer_end, stream);
}

KernelStatus CudaKvMover::LaunchShards(bool gather, std::span<const int32_t> block_ids,
                                       std::span<const void* const> shards, uint32_t layer_begin,
                                       uint32_t layer_end, cudaStream_t stream) {
  const uint32_t heads = spec_.num_kv_heads;
  if (layer_begin >= layer_end || layer_end > spec_.num_layers)
    return KernelStatus::InvalidArgument("layer range [" + std::to_string(layer_begin) + ", " +
                                         std::to_string(layer_end) + ") is not inside [0, " +
                                         std::to_string(spec_.num_layers) + ")");
  if (shards.size() != block_ids.size() * heads)
    return KernelStatus::InvalidArgument(std::to_string(shards.size()) + " shard buffers for " +
                                         std::to_string(block_ids.size()) + " blocks of " +
                                         std::to_string(heads) + " heads");
  if (block_ids.empty()) return KernelStatus::Ok();
  const BlockShape shape = spec_.block_shape();
  const uint64_t row_bytes = uint64_t{spec_.head_dim} * KvDtypeBytes(spec_.dtype);
  bool aligned = layers_aligned_ && row_bytes % 16 == 0;
  host_desc_.resize(2 * shards.size());
  for (size_t i = 0; i < block_ids.size(); ++i) {
    if (block_ids[i] < 0 || static_cast<uint32_t>(block_ids[i]) >= spec_.num_blocks)
      return KernelStatus::InvalidArgument("block id " + std::to_string(block_ids[i]) +
                                           " (entry " + std::to_string(i) +
                                           ") is outside [0, " +
                                           std::to_string(spec_.num_blocks) + ")");
    for (uint32_t h = 0; h < heads; ++h) {
      const size_t s = i * heads + h;
      host_desc_[2 * s] = static_cast<uint64_t>(block_ids[i]);
      host_desc_[2 * s + 1] = reinterpret_cast<uint64_t>(shards[s]);
      if (host_desc_[2 * s + 1] % 16) aligned = false;
    }
  }
  const uint64_t unroll = aligned ? kVecUnroll : kByteUnroll;
  const uint64_t elem = aligned ? 16 : 1;
  const uint64_t chunk_elems = shape.chunk_bytes() / elem;
  const uint64_t tiles_per_chunk = (chunk_elems + kThreads * unroll - 1) / (kThreads * unroll);
  const uint64_t chunks_per_block = uint64_t{layer_end - layer_begin} * shape.planes;
  const uint64_t total_tiles = tiles_per_chunk * block_ids.size() * chunks_per_block;
  if (total_tiles > (uint64_t{1} << 31))
    return KernelStatus::InvalidArgument("head-shard move of " +
                                         std::to_string(block_ids.size()) +
                                         " blocks is too large for one call; split it");
  ShardParams p;
  p.layers = static_cast<const uint64_t*>(d_layers_);
  p.desc = nullptr;
  p.chunk_bytes = shape.chunk_bytes();
  p.shard_chunk_bytes = uint64_t{spec_.block_size} * row_bytes;
  p.row_elems = static_cast<uint32_t>(row_bytes / elem);
  p.token_elems = p.row_elems * heads;
  p.chunk_elems = static_cast<uint32_t>(chunk_elems);
  p.tiles_per_chunk = static_cast<uint32_t>(tiles_per_chunk);
  p.tile_elems = static_cast<uint32_t>((chunk_elems + tiles_per_chunk - 1) / tiles_per_chunk);
  p.total_tiles = static_cast<uint32_t>(total_tiles);
  p.chunks_per_block = static_cast<uint32_t>(chunks_per_block);
  p.first_chunk = layer_begin * shape.planes;
  p.planes = shape.planes;
  p.heads = heads;
  p.pool_blocks = spec_.num_blocks;
  p.layout = spec_.layout;
  const uint64_t max_grid = uint64_t(sm_count_ > 0 ? sm_count_ : 1) * 16;
  const unsigned grid = static_cast<unsigned>(total_tiles < max_grid ? total_tiles : max_grid);
  if (gather) {
    return aligned ? LaunchShardMove<true, true>(p, grid, host_desc_, stream)
                   : LaunchShardMove<true, false>(p, grid, host_desc_, stream);
  }
  return aligned ? LaunchShardMove<false, true>(p, grid, host_desc_, stream)
                 : LaunchShardMove<false, false>(p, grid, host_desc_, stream);
}

}  // namespace strata::kernels::cuda
