#include "store/device_tier.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <string>

namespace strata::store {
namespace {

// Set by the copy operations of this thread when a CUDA copy fails; checked by Put/Get around the
// BlockPool call (the pool's copy table has no error channel: host memcpy cannot fail).
thread_local bool tls_copy_failed = false;

void CopyIn(std::byte* dst, const std::byte* src, size_t n) {
  if (cudaMemcpy(dst, src, n, cudaMemcpyDefault) != cudaSuccess) tls_copy_failed = true;
}
void CopyOut(std::byte* dst, const std::byte* src, size_t n) {
  if (cudaMemcpy(dst, src, n, cudaMemcpyDefault) != cudaSuccess) tls_copy_failed = true;
}

std::string CudaError(const char* what, cudaError_t e) {
  return std::string(what) + ": " + cudaGetErrorString(e);
}

}  // namespace

int DeviceTier::DeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}

Status DeviceTier::CheckDevice(int device) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess)
    return Status::Unavailable("no CUDA device: " + CudaError("cudaGetDeviceCount", e));
  if (n == 0) return Status::Unavailable("no CUDA device: cudaGetDeviceCount found 0 devices");
  if (device < 0 || device >= n)
    return Status::Unavailable("no CUDA device " + std::to_string(device) + ": this machine has " +
                               std::to_string(n) + " (ordinals 0.." + std::to_string(n - 1) + ")");
  return Status::OK();
}

Result<std::unique_ptr<DeviceTier>> DeviceTier::Open(const DeviceTierOptions& options) {
  STRATA_RETURN_IF_ERROR(CheckDevice(options.device));
  uint32_t num_slabs = 0, max_blocks = 0;
  STRATA_RETURN_IF_ERROR(
      ValidateOptions(options.pool, options.capacity_bytes, &num_slabs, &max_blocks));
  STRATA_ASSIGN_OR_RETURN(auto policy, MakeEvictionPolicy(max_blocks, options.pool.policy));
  cudaError_t e = cudaSetDevice(options.device);
  if (e != cudaSuccess) return Status::Unavailable(CudaError("cudaSetDevice", e));
  void* base = nullptr;
  e = cudaMalloc(&base, uint64_t{num_slabs} * options.pool.slab_bytes);
  if (e != cudaSuccess) return Status::NoSpace(CudaError("cudaMalloc", e));
  cudaStream_t stream = nullptr;
  e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  if (e != cudaSuccess) {
    cudaFree(base);
    return Status::Unavailable(CudaError("cudaStreamCreate", e));
  }
  std::unique_ptr<std::byte[]> headers(new std::byte[uint64_t{max_blocks} * kBlockHeaderSize]);
  PoolMemory mem;
  mem.payload_base = static_cast<std::byte*>(base);
  mem.header_base = headers.get();
  mem.copy_in = &CopyIn;
  mem.copy_out = &CopyOut;
  mem.host_visible = false;
  return std::unique_ptr<DeviceTier>(new DeviceTier(options, num_slabs, max_blocks, mem,
                                                    std::move(policy), options.device, base,
                                                    stream, std::move(headers)));
}

namespace {
BlockPoolOptions WithoutSink(BlockPoolOptions o) {
  o.on_evict = nullptr;
  return o;
}
}  // namespace

DeviceTier::DeviceTier(const DeviceTierOptions& options, uint32_t num_slabs, uint32_t max_blocks,
                       PoolMemory memory, std::unique_ptr<EvictionPolicy> policy, int device,
                       void* base, void* stream, std::unique_ptr<std::byte[]> headers)
    : BlockPool(TierKind::kDevice, WithoutSink(options.pool), num_slabs, max_blocks, memory,
                std::move(policy)),
      device_(device),
      base_(base),
      stream_(stream),
      headers_(std::move(headers)) {}

DeviceTier::~DeviceTier() {
  cudaSetDevice(device_);
  for (const auto& [at, unit] : registered_)
    if (unit.second) cudaHostUnregister(at);
  cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
  cudaFree(base_);
}

Status DeviceTier::RegisterHostMemory(std::byte* base, uint64_t bytes, uint64_t unit) {
  std::lock_guard lock(register_mu_);
  if (!registered_.empty())
    return Status::AlreadyExists("device tier: a host region is registered already");
  if (unit == 0 || unit > bytes) unit = bytes;
  cudaError_t e = cudaSetDevice(device_);
  if (e != cudaSuccess)
    return Status::IOError(CudaError("device tier: cudaHostRegister of the host pool", e));
  for (uint64_t at = 0; at < bytes; at += unit) {
    const uint64_t n = std::min(unit, bytes - at);
    e = cudaHostRegister(base + at, n, cudaHostRegisterDefault);
    if (e != cudaSuccess) {
      for (const auto& [p, b] : registered_) cudaHostUnregister(p);
      registered_.clear();
      return Status::IOError(CudaError("device tier: cudaHostRegister of the host pool", e));
    }
    registered_[base + at] = {n, true};
  }
  return Status::OK();
}

Status DeviceTier::ReregisterHostUnit(std::byte* base) {
  std::lock_guard stream_lock(stream_mu_);  // no batch reads or writes the unit meanwhile
  std::lock_guard lock(register_mu_);
  auto it = registered_.find(base);
  if (it == registered_.end())
    return Status::InvalidArgument("device tier: no registered host memory starts there");
  cudaError_t e = cudaSetDevice(device_);
  if (e == cudaSuccess) e = cudaStreamSynchronize(static_cast<cudaStream_t>(stream_));
  if (e == cudaSuccess && it->second.second) {
    e = cudaHostUnregister(base);
    if (e == cudaErrorHostMemoryNotRegistered) e = cudaSuccess;
  }
  if (e != cudaSuccess)
    return Status::IOError(CudaError("device tier: unregistering a renewed host slab", e));
  it->second.second = false;
  e = cudaHostRegister(base, it->second.first, cudaHostRegisterDefault);
  if (e != cudaSuccess)
    return Status::IOError(CudaError("device tier: cudaHostRegister of a renewed host slab", e));
  it->second.second = true;
  return Status::OK();
}

Status DeviceTier::CopyInBatch(std::span<const BatchCopy> copies) {
  return CopyBatch(copies, "host -> device");
}

Status DeviceTier::CopyOutBatch(std::span<const BatchCopy> copies) {
  return CopyBatch(copies, "device -> host");
}

Status DeviceTier::CopyBatch(std::span<const BatchCopy> copies, const char* direction) {
  std::lock_guard lock(stream_mu_);
  auto stream = static_cast<cudaStream_t>(stream_);
  cudaError_t e = cudaSetDevice(device_);
  for (size_t i = 0; e == cudaSuccess && i < copies.size(); ++i)
    e = cudaMemcpyAsync(copies[i].dst, copies[i].src, copies[i].n, cudaMemcpyDefault, stream);
  // Synchronised even after a failed enqueue: the copies already queued read or write the
  // caller's memory, which must not be released under them.
  const cudaError_t sync = cudaStreamSynchronize(stream);
  if (e == cudaSuccess) e = sync;
  if (e != cudaSuccess)
    return Status::IOError(std::string("device tier: batch copy ") + direction + ": " +
                           cudaGetErrorString(e));
  return Status::OK();
}

Status DeviceTier::Put(const BlockHeader& header, std::span<const std::byte> payload,
                       const PutOptions& options) {
  if (cudaSetDevice(device_) != cudaSuccess)
    return Status::IOError("device tier: cudaSetDevice failed");
  tls_copy_failed = false;
  Status st = BlockPool::Put(header, payload, options);
  if (st.ok() && tls_copy_failed) {
    (void)Erase(header.key);
    return Status::IOError("device tier: cudaMemcpy host -> device failed");
  }
  return st;
}

Result<BlockHeader> DeviceTier::Get(const BlockKey& key, std::span<std::byte> out) {
  if (cudaSetDevice(device_) != cudaSuccess)
    return Status::IOError("device tier: cudaSetDevice failed");
  tls_copy_failed = false;
  auto r = BlockPool::Get(key, out);
  if (r.ok() && tls_copy_failed) return Status::IOError("device tier: cudaMemcpy device -> host failed");
  return r;
}

}  // namespace strata::store
