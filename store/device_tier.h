// DeviceTier: a GPU block pool behind the Tier interface. Same BlockPool as the host tier (slots,
// striped index, slab allocator, policy, pins); the payload region is one cudaMalloc allocation
// and the copy operations are cudaMemcpy (host <-> device), chosen once at set-up. Block headers
// stay in host memory. Evicted blocks are dropped (the host tier below holds or re-fetches them);
// there is no zero-copy host view (Acquire returns NotSupported).
//
// Two ways to move bytes:
//  - Put / Get: one block, one synchronous cudaMemcpy on the calling thread (the per-call
//    latency of a small synchronous copy dominates: 0.13-0.15 of a bulk copy for 64 KiB blocks,
//    docs/benchmarks.md).
//  - PutBatch / GetBatch (BlockPool): every block of the batch reserved or read first, then one
//    cudaMemcpyAsync per block on the tier's own stream and one cudaStreamSynchronize for the
//    batch. Host memory registered with RegisterHostMemory (page-locked) makes these true DMA
//    copies; from pageable memory the driver stages them and they are synchronous in effect.
//    The strata serve node (lib/node/node.cc, docs/store.md) uses only the batch calls.
//
// Built only with CUDA (STRATA_WITH_DEVICE_TIER is defined for users of strata::store when it
// is); compiled out otherwise. This header includes no CUDA header.
//
// Thread-safety: as BlockPool (all methods thread-safe). Batches run one at a time on the stream
// (stream_mu_); each call first makes the tier's device current on the calling thread. Ownership:
// the tier owns its device allocation, its stream and its host registration.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <utility>
#include <vector>

#include "store/block_pool.h"
#include "store/thread_annotations.h"

namespace strata::store {

struct DeviceTierOptions {
  // CUDA device ordinal. Default: 0.
  int device = 0;
  // Payload bytes of the pool (rounded up to whole slabs). Default: 1 GiB.
  uint64_t capacity_bytes = uint64_t{1} << 30;
  // Slab size, slots, policy (block_pool.h). on_evict is ignored: device evictions drop.
  BlockPoolOptions pool;
};

class DeviceTier final : public BlockPool {
 public:
  // Unavailable when there is no such CUDA device; NoSpace when cudaMalloc fails;
  // InvalidArgument for bad options.
  static Result<std::unique_ptr<DeviceTier>> Open(const DeviceTierOptions& options);
  ~DeviceTier() override;

  // As BlockPool, plus IOError when a CUDA copy fails (the block is then not stored / not read).
  Status Put(const BlockHeader& header, std::span<const std::byte> payload,
             const PutOptions& options = {}) override;
  Result<BlockHeader> Get(const BlockKey& key, std::span<std::byte> out) override;

  // Page-locks [base, base + bytes) with cudaHostRegister so that batch copies to and from it are
  // asynchronous DMA (the node registers the host pool's mapping when it attaches the tier), as
  // one registration per `unit` bytes (0: one for the whole range): the node registers per host
  // slab, so that a slab that gets fresh memory can be registered again alone. Unregistered by
  // the destructor. AlreadyExists when a region is registered already; IOError naming the CUDA
  // error otherwise (nothing stays registered).
  Status RegisterHostMemory(std::byte* base, uint64_t bytes, uint64_t unit = 0);
  // Registers again the unit at `base` (a host slab whose memory was replaced at the same
  // address: the old registration pins the old pages, so a copy would move the old memory's
  // bytes). Waits for the batch in flight first. When registering the new memory fails, the unit
  // stays unregistered (copies from it are then staged by CUDA: slower, still correct) and the
  // error is returned. InvalidArgument when `base` is not the start of a registered unit.
  Status ReregisterHostUnit(std::byte* base);

  int device() const { return device_; }
  void* device_base() const { return base_; }

  // Number of CUDA devices visible (0 without a driver or device).
  static int DeviceCount();
  // OK when CUDA device `device` exists; otherwise Unavailable saying why, e.g.
  // "no CUDA device: cudaGetDeviceCount: no CUDA-capable device is detected".
  static Status CheckDevice(int device);

 protected:
  // cudaMemcpyAsync per copy on stream_, then one cudaStreamSynchronize.
  Status CopyInBatch(std::span<const BatchCopy> copies) override;
  Status CopyOutBatch(std::span<const BatchCopy> copies) override;

 private:
  DeviceTier(const DeviceTierOptions& options, uint32_t num_slabs, uint32_t max_blocks,
             PoolMemory memory, std::unique_ptr<EvictionPolicy> policy, int device, void* base,
             void* stream, std::unique_ptr<std::byte[]> headers);
  Status CopyBatch(std::span<const BatchCopy> copies, const char* direction);

  const int device_;
  void* const base_;
  void* const stream_;  // cudaStream_t
  std::unique_ptr<std::byte[]> headers_;
  std::mutex stream_mu_;  // one batch at a time on stream_
  std::mutex register_mu_;
  // Units of host memory: start -> (bytes, registered now: false after a failed
  // ReregisterHostUnit).
  std::map<std::byte*, std::pair<uint64_t, bool>> registered_ GUARDED_BY(register_mu_);
};

}  // namespace strata::store
