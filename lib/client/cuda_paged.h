// The CUDA half of the paged data path (docs/data-plane.md, "KV caches in CUDA device memory"):
// what the client does when an engine registers pages in device memory. No CUDA type appears
// here, so client.cc compiles the same with and without CUDA; cuda_paged.cc implements it in CUDA
// builds and cuda_paged_none.cc (NotSupported from every factory) elsewhere.
//
//   DeviceMemory   one per client: registers the client's staging mapping (written by the gather
//                  and encode kernels: pinned and mapped, cudaHostRegister) and, slab by slab, its
//                  read-only mapping of the pool (read by the scatter and decode kernels:
//                  cudaHostRegisterReadOnly), each once per mapping; a slab is unregistered before
//                  the channel maps a new generation over it (tenant change).
//   DeviceKvCache  one per registered cache: its device, a CudaKvMover over its layers, one CUDA
//                  stream, an optional device codec (lossy codecs), device and pinned scratch.
//
// Host addresses passed to DeviceKvCache calls must lie in registered memory: the staging
// mapping, a pool slab made device-readable by DeviceMemory::MapPool, or HostScratch.
//
// Thread-safety: DeviceMemory is thread-safe. A DeviceKvCache serialises its users: a caller
// takes Lock() for a sequence of enqueues ending in Sync() (the stream and scratch are the
// cache's); different caches run concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>

#include "client/channel.h"
#include "strata/namespace.h"
#include "strata/result.h"
#include "strata/status.h"
#include "strata_kernels/kv_layout.h"

namespace strata {

class DeviceMemory {
 public:
  // Registers `channel`'s staging mapping and hooks the channel's slab remapping. NotSupported
  // when this build has no CUDA, no CUDA driver or device is present, or the device cannot
  // register host memory.
  // REQUIRES: `channel` outlives the object.
  static Result<std::unique_ptr<DeviceMemory>> Create(Channel* channel);
  virtual ~DeviceMemory() = default;

  // Makes the slabs holding `locations` device-readable (after Channel::MapForRead). False when
  // the device cannot map read-only memory (cudaDevAttrHostRegisterReadOnlySupported is 0 or the
  // registration failed): the caller then copies verified payloads into HostScratch first.
  virtual Result<bool> MapPool(std::span<const ipc::Location> locations) = 0;
};

class DeviceKvCache {
 public:
  // `layers`: one device pointer per layer, each `paged.layer_bytes()` long on CUDA device
  // `device`. InvalidArgument when a pointer is not device memory of that device; NotSupported
  // as for DeviceMemory::Create. A lossy `codec` is encoded and decoded on the device when the
  // CUDA codec takes the shape (head_dim % 8 == 0), else on the CPU (device_codec() false).
  static Result<std::unique_ptr<DeviceKvCache>> Create(DeviceMemory* memory, int device,
                                                       const kernels::PagedKvSpec& paged,
                                                       std::span<void* const> layers, Codec codec);
  virtual ~DeviceKvCache() = default;

  // Held across a sequence of calls ending in Sync().
  virtual std::unique_lock<std::mutex> Lock() = 0;

  // Enqueues shards[i * heads + h] <- head h of page ids[i], layers [begin, end) (a null shard is
  // skipped).
  virtual Status Gather(std::span<const int32_t> ids, std::span<std::byte* const> shards,
                        uint32_t begin, uint32_t end) = 0;
  // Enqueues head h of page ids[i] <- shards[i * heads + h], layers [begin, end).
  virtual Status Scatter(std::span<const int32_t> ids, std::span<const std::byte* const> shards,
                         uint32_t begin, uint32_t end) = 0;

  // Lossy codecs on the device (device_codec()): payload length of every shard.
  virtual bool device_codec() const = 0;
  virtual uint64_t encoded_bytes() const = 0;
  // Enqueues: gather every shard of pages `ids` into device scratch, then payloads[s] <-
  // encode(shard s) for each non-null payload. Sync() reports a shard holding values the codec
  // cannot represent (NaN/Inf) as InvalidArgument.
  virtual Status GatherEncode(std::span<const int32_t> ids,
                              std::span<std::byte* const> payloads) = 0;
  // Enqueues: device scratch shard s <- decode(payloads[s]), for a later ScatterDecoded.
  // REQUIRES: payloads verified against their checksums, 16-byte aligned.
  virtual Status Decode(std::span<const std::byte* const> payloads) = 0;
  // Enqueues head h of page ids[i] <- decoded shard i * heads + h, layers [begin, end).
  virtual Status ScatterDecoded(std::span<const int32_t> ids, uint32_t begin, uint32_t end) = 0;

  // Pinned, mapped host memory of at least `bytes`, owned by the cache (grown, never shrunk).
  // Valid until the next HostScratch call; use under Lock().
  virtual Result<std::byte*> HostScratch(uint64_t bytes) = 0;
  // Pinned, mapped host memory of at least `bytes` of the caller's own (a layerwise store's
  // shards, kept across calls) until the last reference goes; then kept by the cache (at most two
  // buffers) for a later call that fits, else freed.
  virtual Result<std::shared_ptr<std::byte>> PinnedBuffer(uint64_t bytes) = 0;
  // Records an event after what is enqueued so far (layer `layer` of a layerwise load) and
  // WaitLayer blocks until it completed.
  virtual Status RecordLayer(uint32_t layer) = 0;
  virtual Status WaitLayer(uint32_t layer) = 0;
  // Waits for everything enqueued; the first error of it (kernel faults, codec flags).
  virtual Status Sync() = 0;
};

}  // namespace strata
