// CUDA gather/scatter and lossy codecs, with the semantics of the CPU reference
// (gather_scatter.h, codec.h); kernels/gpu_check and tests/kernels check them against it
// byte-for-byte (the lossy codecs are bit-exact: quant_math.h).
//
// Prepare/post split (NIXL style): CudaKvMover::Create registers an engine's per-layer base
// pointers once; each Gather/Scatter validates its block ids on the host and enqueues ONE kernel
// for all layers and blocks on the caller's stream, its per-block descriptors passed in the
// kernel's parameters (up to 1024 blocks when built with CUDA >= 12.1, whose 16 KiB parameter
// buffers need a driver >= 12.1; else 32); larger calls also upload them with stream-ordered
// allocation (cudaMallocAsync). CudaCodec calls work the same way. Calls return once the work
// is enqueued; the caller synchronises the stream before reading the destination. Block buffers
// may be device memory or mapped pinned host memory (zero-copy over PCIe/NVLink-C2C): any
// address the device can access.
//
// Copies use 16-byte vector accesses when chunk_bytes and every pointer are 16-byte aligned
// (always true for real engine shapes), else a byte-wise fallback.
//
// Thread-safety: a CudaKvMover or CudaCodec may be used by one host thread at a time (it reuses
// a host-side descriptor vector). Work on different streams is independent; the caller orders
// writes to the same bytes. Objects own their device allocations; caller buffers are borrowed.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include <cuda_runtime_api.h>

#include "strata_kernels/codec.h"
#include "strata_kernels/kernel_status.h"
#include "strata_kernels/kv_layout.h"

namespace strata::kernels::cuda {

// OK with a device present, else DeviceError naming the CUDA error (e.g. "no CUDA-capable
// device is detected"). Tests use it to decide whether to skip.
KernelStatus DeviceAvailable();

class CudaKvMover {
 public:
  // `layer_bases`: spec.num_layers device pointers, each to a layer cache of spec.layer_bytes().
  // REQUIRES: the current device is the one that holds the cache.
  static KernelStatus Create(const PagedKvSpec& spec, std::span<void* const> layer_bases,
                             std::unique_ptr<CudaKvMover>* out);
  ~CudaKvMover();
  CudaKvMover(const CudaKvMover&) = delete;
  CudaKvMover& operator=(const CudaKvMover&) = delete;

  const PagedKvSpec& spec() const { return spec_; }

  // dst_blocks[i] <- engine block block_ids[i]. InvalidArgument (nothing enqueued) for a bad id,
  // a count mismatch or a null pointer. REQUIRES: each dst buffer holds block_shape().bytes().
  KernelStatus Gather(std::span<const int32_t> block_ids, std::span<void* const> dst_blocks,
                      cudaStream_t stream);
  // engine block block_ids[i] <- src_blocks[i]. Ids should be distinct (a repeated id gets one
  // of its sources, unspecified which).
  KernelStatus Scatter(std::span<const int32_t> block_ids, std::span<const void* const> src_blocks,
                       cudaStream_t stream);

  // Head shards, byte for byte as GatherHeadShardsCpu / ScatterHeadShardsCpu (gather_scatter.h):
  // shard (i, h) = shards[i * spec().num_kv_heads + h] holds head h of page block_ids[i] as
  // [layer][plane][token][head_dim]; only layers [layer_begin, layer_end) move, each to its own
  // offset of the shard. One kernel per call, reading each engine chunk contiguously. A null
  // shard pointer is skipped (the paged store leaves out shards the cache holds already).
  // InvalidArgument (nothing enqueued) for a bad id, count or layer range.
  // REQUIRES: shards are device-accessible (device memory or mapped pinned host memory) and
  // hold a shard's bytes (block_shape() with num_kv_heads = 1).
  KernelStatus GatherHeadShards(std::span<const int32_t> block_ids,
                                std::span<void* const> dst_shards, uint32_t layer_begin,
                                uint32_t layer_end, cudaStream_t stream);
  KernelStatus ScatterHeadShards(std::span<const int32_t> block_ids,
                                 std::span<const void* const> src_shards, uint32_t layer_begin,
                                 uint32_t layer_end, cudaStream_t stream);

 private:
  CudaKvMover() = default;
  KernelStatus Launch(bool gather, std::span<const int32_t> block_ids,
                      std::span<const void* const> blocks, cudaStream_t stream);
  KernelStatus LaunchShards(bool gather, std::span<const int32_t> block_ids,
                            std::span<const void* const> shards, uint32_t layer_begin,
                            uint32_t layer_end, cudaStream_t stream);

  PagedKvSpec spec_;
  void* d_layers_ = nullptr;  // device array of num_layers base pointers
  bool layers_aligned_ = false;
  int sm_count_ = 0;
  std::vector<uint64_t> host_desc_;
};

// Lossy codecs on the device. Payloads have exactly the CPU reference's bytes (codec.h).
class CudaCodec {
 public:
  // NotSupported unless the codec is lossy, the dtype fp16/bf16 and head_dim % 8 == 0 (every
  // real head and latent dim); the CPU reference takes any shape.
  static KernelStatus Create(Codec codec, const BlockShape& shape, std::unique_ptr<CudaCodec>* out);
  ~CudaCodec() = default;

  uint64_t encoded_bytes() const { return encoded_bytes_; }

  // payloads[i] <- encode(blocks[i]). `d_flags`: null, or a device array of blocks.size() u32
  // that the call zeroes and the kernels set nonzero for a block holding NaN/Inf (bit 0) or, for
  // INT4, |x| > 65504 (bit 1); such a payload is invalid (the CPU reference returns OutOfRange).
  // REQUIRES: 16-byte aligned device-accessible buffers of shape.bytes() / encoded_bytes().
  KernelStatus Encode(std::span<const void* const> blocks, std::span<void* const> payloads,
                      uint32_t* d_flags, cudaStream_t stream);
  // blocks[i] <- decode(payloads[i]). Payloads are trusted to be this codec's and shape's (check
  // the header and the block checksum first: a damaged body decodes to wrong values, never to an
  // out-of-bounds access).
  KernelStatus Decode(std::span<const void* const> payloads, std::span<void* const> blocks,
                      cudaStream_t stream);

 private:
  CudaCodec() = default;
  Codec codec_ = Codec::kNone;
  BlockShape shape_;
  uint64_t encoded_bytes_ = 0;
  std::vector<uint64_t> host_desc_;
};

}  // namespace strata::kernels::cuda
