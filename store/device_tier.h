// DeviceTier: a GPU block pool behind the Tier interface (DESIGN.md: the optional hot tier, owned
// by the client library inside the engine process). Same BlockPool as the host tier (slots,
// striped index, slab allocator, policy, pins); the payload region is one cudaMalloc allocation
// and the copy operations are cudaMemcpy (host <-> device), chosen once at set-up. Block headers
// stay in host memory. Evicted blocks are dropped (the host tier below holds or re-fetches them);
// there is no zero-copy host view (Acquire returns NotSupported).
//
// Built only with CUDA (STRATA_WITH_DEVICE_TIER is defined for users of strata::store when it
// is); compiled out otherwise.
//
// Thread-safety: as BlockPool (all methods thread-safe); copies run on the calling thread with
// the default stream. Ownership: the tier owns its device allocation.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "store/block_pool.h"

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

  int device() const { return device_; }
  void* device_base() const { return base_; }

  // Number of CUDA devices visible (0 without a driver or device).
  static int DeviceCount();

 private:
  DeviceTier(const DeviceTierOptions& options, uint32_t num_slabs, uint32_t max_blocks,
             PoolMemory memory, std::unique_ptr<EvictionPolicy> policy, int device, void* base,
             std::unique_ptr<std::byte[]> headers);

  int device_;
  void* base_;
  std::unique_ptr<std::byte[]> headers_;
};

}  // namespace strata::store
