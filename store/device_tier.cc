#include "store/device_tier.h"

#include <cuda_runtime_api.h>

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

Result<std::unique_ptr<DeviceTier>> DeviceTier::Open(const DeviceTierOptions& options) {
  if (options.device < 0 || options.device >= DeviceCount())
    return Status::Unavailable("no CUDA device " + std::to_string(options.device));
  uint32_t num_slabs = 0, max_blocks = 0;
  STRATA_RETURN_IF_ERROR(
      ValidateOptions(options.pool, options.capacity_bytes, &num_slabs, &max_blocks));
  STRATA_ASSIGN_OR_RETURN(auto policy, MakeEvictionPolicy(max_blocks, options.pool.policy));
  cudaError_t e = cudaSetDevice(options.device);
  if (e != cudaSuccess) return Status::Unavailable(CudaError("cudaSetDevice", e));
  void* base = nullptr;
  e = cudaMalloc(&base, uint64_t{num_slabs} * options.pool.slab_bytes);
  if (e != cudaSuccess) return Status::NoSpace(CudaError("cudaMalloc", e));
  std::unique_ptr<std::byte[]> headers(new std::byte[uint64_t{max_blocks} * kBlockHeaderSize]);
  PoolMemory mem;
  mem.payload_base = static_cast<std::byte*>(base);
  mem.header_base = headers.get();
  mem.copy_in = &CopyIn;
  mem.copy_out = &CopyOut;
  mem.host_visible = false;
  return std::unique_ptr<DeviceTier>(new DeviceTier(options, num_slabs, max_blocks, mem,
                                                    std::move(policy), options.device, base,
                                                    std::move(headers)));
}

namespace {
BlockPoolOptions WithoutSink(BlockPoolOptions o) {
  o.on_evict = nullptr;
  return o;
}
}  // namespace

DeviceTier::DeviceTier(const DeviceTierOptions& options, uint32_t num_slabs, uint32_t max_blocks,
                       PoolMemory memory, std::unique_ptr<EvictionPolicy> policy, int device,
                       void* base, std::unique_ptr<std::byte[]> headers)
    : BlockPool(TierKind::kDevice, WithoutSink(options.pool), num_slabs, max_blocks, memory,
                std::move(policy)),
      device_(device),
      base_(base),
      headers_(std::move(headers)) {}

DeviceTier::~DeviceTier() { cudaFree(base_); }

Status DeviceTier::Put(const BlockHeader& header, std::span<const std::byte> payload,
                       const PutOptions& options) {
  tls_copy_failed = false;
  Status st = BlockPool::Put(header, payload, options);
  if (st.ok() && tls_copy_failed) {
    (void)Erase(header.key);
    return Status::IOError("device tier: cudaMemcpy host -> device failed");
  }
  return st;
}

Result<BlockHeader> DeviceTier::Get(const BlockKey& key, std::span<std::byte> out) {
  tls_copy_failed = false;
  auto r = BlockPool::Get(key, out);
  if (r.ok() && tls_copy_failed) return Status::IOError("device tier: cudaMemcpy device -> host failed");
  return r;
}

}  // namespace strata::store
