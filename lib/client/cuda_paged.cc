// The CUDA half of the paged data path (cuda_paged.h). The only file of lib/ that includes the
// CUDA runtime: libstrata links it statically (cudart_static loads the driver with dlopen on the
// first call), so a machine without a GPU loads the library and gets NotSupported here.
//
// Copies of KV bytes (docs/data-plane.md):
//   store, codec none:     engine pages -> staging (gather kernel writing over PCIe into the
//                          registered staging mapping), then the daemon's copy.
//   store, lossy codec:    engine pages -> device scratch (gather) -> staging (encode kernel).
//   store, lossless codec: engine pages -> pinned scratch (gather) -> staging (CPU encoder).
//   load, codec none:      pool -> engine pages (scatter kernel reading the registered pool),
//                          after the CPU verified each shard's checksum.
//   load, lossy codec:     pool -> device scratch (decode kernel) -> engine pages (scatter).
//   load, lossless codec:  pool -> pinned scratch (CPU verify and decode) -> engine pages.
#include "client/cuda_paged.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <string>
#include <vector>

#include "strata_kernels/cuda_kernels.h"

namespace strata {
namespace {

Status CudaStatus(cudaError_t e, std::string_view what) {
  if (e == cudaSuccess) return Status::OK();
  return Status::Internal(std::string(what) + ": " + cudaGetErrorName(e) + ": " +
                          cudaGetErrorString(e));
}

Status KernelToStatus(const kernels::KernelStatus& st, std::string_view what) {
  if (st.ok()) return Status::OK();
  const std::string msg = std::string(what) + ": " + st.message();
  switch (st.code()) {
    case kernels::KernelCode::kInvalidArgument: return Status::InvalidArgument(msg);
    case kernels::KernelCode::kNotSupported: return Status::NotSupported(msg);
    default: return Status::Internal(msg);
  }
}

// OK when CUDA can serve device `device` (-1: any device), else NotSupported naming why.
Status DeviceUsable(int device) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0)
    return Status::NotSupported(
        std::string("KV pages in CUDA device memory: no usable CUDA device (") +
        (e != cudaSuccess ? std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e)
                          : std::string("no device")) +
        ")");
  if (device >= n)
    return Status::InvalidArgument("KV pages on CUDA device " + std::to_string(device) +
                                   ", but this machine has " + std::to_string(n));
  return Status::OK();
}

// A host range registered with CUDA and where the device sees it.
struct MappedRange {
  const std::byte* host = nullptr;
  uint64_t bytes = 0;
  std::byte* device = nullptr;
  bool Contains(const std::byte* p) const { return p >= host && p < host + bytes; }
};

class DeviceMemoryImpl final : public DeviceMemory {
 public:
  explicit DeviceMemoryImpl(Channel* channel) : channel_(channel) {}

  ~DeviceMemoryImpl() override {
    channel_->SetSlabRemapHook(nullptr);
    std::lock_guard<std::mutex> lock(mu_);
    for (MappedRange& r : slabs_)
      if (r.host != nullptr) (void)cudaHostUnregister(const_cast<std::byte*>(r.host));
    if (staging_.host != nullptr) (void)cudaHostUnregister(const_cast<std::byte*>(staging_.host));
  }

  Status Init() {
    STRATA_RETURN_IF_ERROR(DeviceUsable(-1));
    int dev = 0, can_register = 0, read_only = 0;
    STRATA_RETURN_IF_ERROR(CudaStatus(cudaGetDevice(&dev), "cudaGetDevice"));
    STRATA_RETURN_IF_ERROR(CudaStatus(
        cudaDeviceGetAttribute(&can_register, cudaDevAttrHostRegisterSupported, dev),
        "cudaDeviceGetAttribute(HostRegisterSupported)"));
    if (!can_register)
      return Status::NotSupported(
          "KV pages in CUDA device memory: the device cannot register host memory "
          "(cudaDevAttrHostRegisterSupported is 0)");
    STRATA_RETURN_IF_ERROR(CudaStatus(
        cudaDeviceGetAttribute(&read_only, cudaDevAttrHostRegisterReadOnlySupported, dev),
        "cudaDeviceGetAttribute(HostRegisterReadOnlySupported)"));
    pool_read_only_ = read_only != 0;
    // Staging: written by the gather and encode kernels, read by the daemon. Registering pins
    // (and so allocates) all of it, once.
    std::byte* base = channel_->staging_base();
    STRATA_RETURN_IF_ERROR(CudaStatus(
        cudaHostRegister(base, channel_->staging_bytes(),
                         cudaHostRegisterPortable | cudaHostRegisterMapped),
        "cudaHostRegister(staging memory)"));
    staging_.host = base;
    staging_.bytes = channel_->staging_bytes();
    void* d = nullptr;
    STRATA_RETURN_IF_ERROR(
        CudaStatus(cudaHostGetDevicePointer(&d, base, 0), "cudaHostGetDevicePointer(staging)"));
    staging_.device = static_cast<std::byte*>(d);
    slab_bytes_ = channel_->slab_bytes();
    slabs_.resize(slab_bytes_ ? channel_->pool_bytes() / slab_bytes_ : 0);
    channel_->SetSlabRemapHook([this](uint64_t slab) { Unregister(slab); });
    return Status::OK();
  }

  Result<bool> MapPool(std::span<const ipc::Location> locations) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!pool_read_only_ || pool_failed_ || slab_bytes_ == 0) return false;
    for (const ipc::Location& loc : locations) {
      const uint64_t slab = loc.offset / slab_bytes_;
      if (slab >= slabs_.size()) return Status::Internal("a location outside the pool's slabs");
      if (slabs_[slab].host != nullptr) continue;
      auto* at = const_cast<std::byte*>(channel_->pool_base()) + slab * slab_bytes_;
      cudaError_t e = cudaHostRegister(
          at, slab_bytes_,
          cudaHostRegisterPortable | cudaHostRegisterMapped | cudaHostRegisterReadOnly);
      void* d = nullptr;
      if (e == cudaSuccess) e = cudaHostGetDevicePointer(&d, at, 0);
      if (e != cudaSuccess) {
        // The fallback (cuda_paged.h): verified copies through pinned scratch, for good.
        (void)cudaGetLastError();
        pool_failed_ = true;
        return false;
      }
      slabs_[slab] = {at, slab_bytes_, static_cast<std::byte*>(d)};
    }
    return true;
  }

  // Where the device sees `p` (staging or a registered pool slab); nullptr when nowhere known.
  std::byte* DevicePointer(const std::byte* p) {
    if (staging_.Contains(p)) return staging_.device + (p - staging_.host);
    const std::byte* pool = channel_->pool_base();
    if (slab_bytes_ != 0 && p >= pool && p < pool + slabs_.size() * slab_bytes_) {
      std::lock_guard<std::mutex> lock(mu_);
      const MappedRange& r = slabs_[(p - pool) / slab_bytes_];
      if (r.host != nullptr) return r.device + (p - r.host);
    }
    return nullptr;
  }

 private:
  // Runs under the channel's lock before it maps a new generation over `slab`: no load holds a
  // pin there (the daemon renews only free slabs), so no kernel reads the old registration.
  void Unregister(uint64_t slab) {
    std::lock_guard<std::mutex> lock(mu_);
    if (slab >= slabs_.size() || slabs_[slab].host == nullptr) return;
    (void)cudaHostUnregister(const_cast<std::byte*>(slabs_[slab].host));
    slabs_[slab] = {};
  }

  Channel* channel_;
  MappedRange staging_;
  uint64_t slab_bytes_ = 0;
  bool pool_read_only_ = false;
  std::mutex mu_;
  std::vector<MappedRange> slabs_;  // GUARDED_BY(mu_)
  bool pool_failed_ = false;        // GUARDED_BY(mu_)
};

class DeviceKvCacheImpl final : public DeviceKvCache {
 public:
  DeviceKvCacheImpl(DeviceMemoryImpl* memory, int device, const kernels::PagedKvSpec& paged,
                    Codec codec)
      : memory_(memory), device_(device), paged_(paged), codec_(codec) {
    shard_ = paged.block_shape();
    shard_.num_kv_heads = 1;
  }

  ~DeviceKvCacheImpl() override {
    (void)cudaSetDevice(device_);
    if (stream_ != nullptr) (void)cudaStreamSynchronize(stream_);
    for (cudaEvent_t e : events_) (void)cudaEventDestroy(e);
    if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
    if (d_scratch_ != nullptr) (void)cudaFree(d_scratch_);
    if (d_flags_ != nullptr) (void)cudaFree(d_flags_);
    if (h_flags_ != nullptr) (void)cudaFreeHost(h_flags_);
    if (h_scratch_.host != nullptr) (void)cudaFreeHost(const_cast<std::byte*>(h_scratch_.host));
    for (const MappedRange& r : idle_pinned_) (void)cudaFreeHost(const_cast<std::byte*>(r.host));
  }

  Status Init(std::span<void* const> layers) {
    STRATA_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device_), "cudaSetDevice"));
    for (size_t l = 0; l < layers.size(); ++l) {
      cudaPointerAttributes a{};
      const cudaError_t e = cudaPointerGetAttributes(&a, layers[l]);
      if (e != cudaSuccess || a.device != device_ ||
          (a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged)) {
        (void)cudaGetLastError();
        return Status::InvalidArgument("RegisterKvCache: layer " + std::to_string(l) +
                                       " is not CUDA device memory of device " +
                                       std::to_string(device_));
      }
    }
    STRATA_RETURN_IF_ERROR(
        KernelToStatus(kernels::cuda::CudaKvMover::Create(paged_, layers, &mover_),
                       "RegisterKvCache"));
    STRATA_RETURN_IF_ERROR(CudaStatus(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
                                      "cudaStreamCreateWithFlags"));
    events_.resize(paged_.num_layers, nullptr);
    for (cudaEvent_t& e : events_)
      STRATA_RETURN_IF_ERROR(CudaStatus(cudaEventCreateWithFlags(&e, cudaEventDisableTiming),
                                        "cudaEventCreateWithFlags"));
    const auto kc = static_cast<kernels::Codec>(codec_);
    if (kernels::IsLossyCodec(kc)) {
      kernels::KernelStatus st = kernels::cuda::CudaCodec::Create(kc, shard_, &codec_dev_);
      if (!st.ok() && st.code() != kernels::KernelCode::kNotSupported)
        return KernelToStatus(st, "RegisterKvCache: device codec");
      // NotSupported (a shape the CUDA codec does not take): the CPU encodes and decodes.
    }
    return Status::OK();
  }

  std::unique_lock<std::mutex> Lock() override { return std::unique_lock<std::mutex>(mu_); }

  Status Gather(std::span<const int32_t> ids, std::span<std::byte* const> shards,
                uint32_t begin, uint32_t end) override {
    STRATA_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device_), "cudaSetDevice"));
    ptrs_.assign(shards.size(), nullptr);
    for (size_t s = 0; s < shards.size(); ++s)
      if (shards[s] != nullptr) STRATA_RETURN_IF_ERROR(Device(shards[s], &ptrs_[s]));
    return Enqueued(mover_->GatherHeadShards(ids, ptrs_, begin, end, stream_), "gather");
  }

  Status Scatter(std::span<const int32_t> ids, std::span<const std::byte* const> shards,
                 uint32_t begin, uint32_t end) override {
    STRATA_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device_), "cudaSetDevice"));
    ptrs_.assign(shards.size(), nullptr);
    for (size_t s = 0; s < shards.size(); ++s)
      if (shards[s] != nullptr) STRATA_RETURN_IF_ERROR(Device(shards[s], &ptrs_[s]));
    cptrs_.assign(ptrs_.begin(), ptrs_.end());
    return Enqueued(mover_->ScatterHeadShards(ids, cptrs_, begin, end, stream_), "scatter");
  }

  bool device_codec() const override { return codec_dev_ != nullptr; }
  uint64_t encoded_bytes() const override { return codec_dev_ ? codec_dev_->encoded_bytes() : 0; }

  Status GatherEncode(std::span<const int32_t> ids,
                      std::span<std::byte* const> payloads) override {
    if (!codec_dev_) return Status::Internal("GatherEncode without a device codec");
    STRATA_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device_), "cudaSetDevice"));
    const size_t n = payloads.size();
    STRATA_RETURN_IF_ERROR(DeviceScratch(n));
    ptrs_.resize(n);
    for (size_t s = 0; s < n; ++s) ptrs_[s] = d_scratch_ + s * shard_.bytes();
    STRATA_RETURN_IF_ERROR(Enqueued(
        mover_->GatherHeadShards(ids, ptrs_, 0, paged_.num_layers, stream_), "gather"));
    blocks_.clear();
    outs_.clear();
    for (size_t s = 0; s < n; ++s) {
      if (payloads[s] == nullptr) continue;
      void* d = nullptr;
      STRATA_RETURN_IF_ERROR(Device(payloads[s], &d));
      blocks_.push_back(ptrs_[s]);
      outs_.push_back(d);
    }
    if (blocks_.empty()) return Status::OK();
    STRATA_RETURN_IF_ERROR(Flags(blocks_.size()));
    STRATA_RETURN_IF_ERROR(
        Enqueued(codec_dev_->Encode(blocks_, outs_, d_flags_, stream_), "encode"));
    STRATA_RETURN_IF_ERROR(Enqueued(
        CudaStatus(cudaMemcpyAsync(h_flags_, d_flags_, blocks_.size() * sizeof(uint32_t),
                                   cudaMemcpyDeviceToHost, stream_),
                   "cudaMemcpyAsync(codec flags)")));
    flags_pending_ = blocks_.size();
    return Status::OK();
  }

  Status Decode(std::span<const std::byte* const> payloads) override {
    if (!codec_dev_) return Status::Internal("Decode without a device codec");
    STRATA_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device_), "cudaSetDevice"));
    const size_t n = payloads.size();
    STRATA_RETURN_IF_ERROR(DeviceScratch(n));
    blocks_.clear();
    outs_.clear();
    for (size_t s = 0; s < n; ++s) {
      void* d = nullptr;
      STRATA_RETURN_IF_ERROR(Device(payloads[s], &d));
      blocks_.push_back(d);
      outs_.push_back(d_scratch_ + s * shard_.bytes());
    }
    if (n == 0) return Status::OK();
    return Enqueued(codec_dev_->Decode(blocks_, outs_, stream_), "decode");
  }

  Status ScatterDecoded(std::span<const int32_t> ids, uint32_t begin, uint32_t end) override {
    STRATA_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device_), "cudaSetDevice"));
    const size_t n = ids.size() * paged_.num_kv_heads;
    if (n * shard_.bytes() > d_scratch_bytes_)
      return Status::Internal("ScatterDecoded of more shards than were decoded");
    cptrs_.resize(n);
    for (size_t s = 0; s < n; ++s) cptrs_[s] = d_scratch_ + s * shard_.bytes();
    return Enqueued(mover_->ScatterHeadShards(ids, cptrs_, begin, end, stream_), "scatter");
  }

  Result<std::byte*> HostScratch(uint64_t bytes) override {
    if (bytes <= h_scratch_.bytes) return const_cast<std::byte*>(h_scratch_.host);
    STRATA_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device_), "cudaSetDevice"));
    STRATA_RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"));
    if (h_scratch_.host != nullptr) (void)cudaFreeHost(const_cast<std::byte*>(h_scratch_.host));
    h_scratch_ = {};
    STRATA_ASSIGN_OR_RETURN(h_scratch_, AllocMapped(std::max<uint64_t>(bytes, uint64_t{4} << 20),
                                                    "cudaHostAlloc(scratch)"));
    return const_cast<std::byte*>(h_scratch_.host);
  }

  // Pinned host memory mapped into the device's address space (the caller sets the device).
  static Result<MappedRange> AllocMapped(uint64_t bytes, const char* what) {
    void* p = nullptr;
    STRATA_RETURN_IF_ERROR(
        CudaStatus(cudaHostAlloc(&p, bytes, cudaHostAllocPortable | cudaHostAllocMapped), what));
    void* d = nullptr;
    if (Status st = CudaStatus(cudaHostGetDevicePointer(&d, p, 0), "cudaHostGetDevicePointer");
        !st.ok()) {
      (void)cudaFreeHost(p);
      return st;
    }
    return MappedRange{static_cast<std::byte*>(p), bytes, static_cast<std::byte*>(d)};
  }

  // Pinning is slow (cudaHostAlloc of the 512 MiB of a 4K-token prompt takes tens to hundreds of
  // milliseconds), so a released buffer is kept for the next layerwise store (at most
  // kIdlePinnedBuffers of them, freed with the cache) and reused when it is large enough and at
  // most twice the size asked for. Sizes are rounded up to 2 MiB so that prompts of nearby
  // lengths share buffers.
  Result<std::shared_ptr<std::byte>> PinnedBuffer(uint64_t bytes) override {
    bytes = (std::max<uint64_t>(bytes, 1) + kPinnedGrain - 1) / kPinnedGrain * kPinnedGrain;
    MappedRange buffer;
    {
      std::lock_guard<std::mutex> lock(pinned_mu_);
      auto best = idle_pinned_.end();
      for (auto it = idle_pinned_.begin(); it != idle_pinned_.end(); ++it)
        if (it->bytes >= bytes && it->bytes <= 2 * bytes &&
            (best == idle_pinned_.end() || it->bytes < best->bytes))
          best = it;
      if (best != idle_pinned_.end()) {
        buffer = *best;
        idle_pinned_.erase(best);
      }
    }
    if (buffer.host == nullptr) {
      STRATA_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device_), "cudaSetDevice"));
      STRATA_ASSIGN_OR_RETURN(buffer, AllocMapped(bytes, "cudaHostAlloc(layerwise shards)"));
    }
    {
      std::lock_guard<std::mutex> lock(pinned_mu_);
      pinned_.push_back(buffer);
    }
    // The buffer's holder also holds this cache (RegisteredCache), so `this` outlives it.
    return std::shared_ptr<std::byte>(const_cast<std::byte*>(buffer.host), [this](std::byte* q) {
      MappedRange freed;
      {
        std::lock_guard<std::mutex> lock(pinned_mu_);
        auto it = std::find_if(pinned_.begin(), pinned_.end(),
                               [&](const MappedRange& r) { return r.host == q; });
        if (it != pinned_.end()) {
          freed = *it;
          pinned_.erase(it);
        }
        if (freed.host != nullptr && idle_pinned_.size() < kIdlePinnedBuffers) {
          idle_pinned_.push_back(freed);
          return;
        }
      }
      (void)cudaFreeHost(q);
    });
  }

  Status RecordLayer(uint32_t layer) override {
    if (layer >= events_.size()) return Status::InvalidArgument("RecordLayer: no such layer");
    return Enqueued(CudaStatus(cudaEventRecord(events_[layer], stream_), "cudaEventRecord"));
  }

  Status WaitLayer(uint32_t layer) override {
    if (layer >= events_.size()) return Status::InvalidArgument("WaitLayer: no such layer");
    return CudaStatus(cudaEventSynchronize(events_[layer]), "layer scatter");
  }

  Status Sync() override {
    STRATA_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device_), "cudaSetDevice"));
    STRATA_RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream_), "device paged transfer"));
    const size_t pending = flags_pending_;
    flags_pending_ = 0;
    for (size_t i = 0; i < pending; ++i)
      if (h_flags_[i] != 0)
        return Status::InvalidArgument(
            std::string("StorePaged: a shard holds values codec ") +
            std::string(CodecName(codec_)) + " cannot represent (NaN/Inf, or |x| > 65504 for " +
            "int4_kivi)");
    return Status::OK();
  }

 private:
  // An enqueue that failed may leave earlier work of the sequence running (it may write staging
  // or read the pool): wait for it before the caller releases either.
  Status Enqueued(Status st) {
    if (!st.ok()) (void)cudaStreamSynchronize(stream_);
    return st;
  }
  Status Enqueued(const kernels::KernelStatus& st, std::string_view what) {
    return Enqueued(KernelToStatus(st, what));
  }

  Status Device(const std::byte* host, void** out) {
    if (h_scratch_.Contains(host)) {
      *out = h_scratch_.device + (host - h_scratch_.host);
      return Status::OK();
    }
    std::byte* d = memory_->DevicePointer(host);
    if (d == nullptr) {
      std::lock_guard<std::mutex> lock(pinned_mu_);
      for (const MappedRange& r : pinned_)
        if (r.Contains(host)) d = r.device + (host - r.host);
    }
    if (d == nullptr) return Status::Internal("a host buffer the device cannot see");
    *out = d;
    return Status::OK();
  }

  Status DeviceScratch(size_t shards) {
    const uint64_t bytes = shards * shard_.bytes();
    if (bytes <= d_scratch_bytes_) return Status::OK();
    STRATA_RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"));
    if (d_scratch_ != nullptr) (void)cudaFree(d_scratch_);
    d_scratch_ = nullptr;
    d_scratch_bytes_ = 0;
    void* p = nullptr;
    STRATA_RETURN_IF_ERROR(CudaStatus(cudaMalloc(&p, bytes), "cudaMalloc(device scratch)"));
    d_scratch_ = static_cast<std::byte*>(p);
    d_scratch_bytes_ = bytes;
    return Status::OK();
  }

  Status Flags(size_t n) {
    if (n <= flags_capacity_) return Status::OK();
    STRATA_RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"));
    if (d_flags_ != nullptr) (void)cudaFree(d_flags_);
    if (h_flags_ != nullptr) (void)cudaFreeHost(h_flags_);
    d_flags_ = nullptr;
    h_flags_ = nullptr;
    flags_capacity_ = 0;
    STRATA_RETURN_IF_ERROR(CudaStatus(cudaMalloc(reinterpret_cast<void**>(&d_flags_),
                                                 n * sizeof(uint32_t)),
                                      "cudaMalloc(codec flags)"));
    STRATA_RETURN_IF_ERROR(CudaStatus(cudaMallocHost(reinterpret_cast<void**>(&h_flags_),
                                                     n * sizeof(uint32_t)),
                                      "cudaMallocHost(codec flags)"));
    flags_capacity_ = n;
    return Status::OK();
  }

  DeviceMemoryImpl* memory_;
  const int device_;
  const kernels::PagedKvSpec paged_;
  const Codec codec_;
  kernels::BlockShape shard_;
  std::unique_ptr<kernels::cuda::CudaKvMover> mover_;
  std::unique_ptr<kernels::cuda::CudaCodec> codec_dev_;
  cudaStream_t stream_ = nullptr;
  std::vector<cudaEvent_t> events_;  // one per layer (layerwise loads)

  std::mutex mu_;  // held by users (Lock()) across a sequence; the members below are theirs
  std::byte* d_scratch_ = nullptr;
  uint64_t d_scratch_bytes_ = 0;
  MappedRange h_scratch_;
  uint32_t* d_flags_ = nullptr;
  uint32_t* h_flags_ = nullptr;
  size_t flags_capacity_ = 0;
  size_t flags_pending_ = 0;
  std::vector<void*> ptrs_;
  std::vector<const void*> cptrs_;
  std::vector<const void*> blocks_;
  std::vector<void*> outs_;
  static constexpr size_t kIdlePinnedBuffers = 2;
  static constexpr uint64_t kPinnedGrain = uint64_t{2} << 20;
  std::mutex pinned_mu_;
  std::vector<MappedRange> pinned_;       // PinnedBuffer's live buffers. GUARDED_BY(pinned_mu_)
  std::vector<MappedRange> idle_pinned_;  // released, kept for reuse. GUARDED_BY(pinned_mu_)
};

}  // namespace

Result<std::unique_ptr<DeviceMemory>> DeviceMemory::Create(Channel* channel) {
  auto m = std::make_unique<DeviceMemoryImpl>(channel);
  STRATA_RETURN_IF_ERROR(m->Init());
  return std::unique_ptr<DeviceMemory>(std::move(m));
}

Result<std::unique_ptr<DeviceKvCache>> DeviceKvCache::Create(DeviceMemory* memory, int device,
                                                             const kernels::PagedKvSpec& paged,
                                                             std::span<void* const> layers,
                                                             Codec codec) {
  STRATA_RETURN_IF_ERROR(DeviceUsable(device));
  auto c = std::make_unique<DeviceKvCacheImpl>(static_cast<DeviceMemoryImpl*>(memory), device,
                                               paged, codec);
  STRATA_RETURN_IF_ERROR(c->Init(layers));
  return std::unique_ptr<DeviceKvCache>(std::move(c));
}

}  // namespace strata
