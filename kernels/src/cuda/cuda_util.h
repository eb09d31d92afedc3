// Helpers shared by the .cu files of kernels/: CUDA error mapping and the per-call descriptor
// arrays (one ulonglong2 per block) that the kernels read.
// Thread-safety: stateless.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include <cuda_runtime_api.h>
#include <vector_types.h>

#include "strata_kernels/kernel_status.h"

namespace strata::kernels::cuda {

inline KernelStatus CudaError(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return KernelStatus::Ok();
  return KernelStatus::DeviceError(std::string(what) + ": " + cudaGetErrorName(e) + ": " +
                                   cudaGetErrorString(e));
}

// A call's descriptors travel by value in the kernel's parameter buffer when they fit (kN
// entries), so a call costs one launch: no allocation and no host-to-device copy, each of which
// adds a dependent step of several microseconds to the call (about 50 us together on an H100 VM,
// a third of an MLA gather of 256 blocks). InlineDesc<0> is the fallback for larger calls: the
// array is uploaded with stream-ordered allocation and the kernel reads it from device memory.
template <uint32_t kN>
struct InlineDesc {
  static constexpr uint32_t kSize = kN;
  ulonglong2 d[kN];
};
template <>
struct InlineDesc<0> {
  static constexpr uint32_t kSize = 0;
};

constexpr uint32_t kInlineSmall = 32;  // 512 bytes: per-request calls
#if CUDART_VERSION >= 12010
constexpr uint32_t kInlineLarge = 1024;  // 16 KiB (CUDA >= 12.1 and sm_70+ take 32764 bytes)
#else
constexpr uint32_t kInlineLarge = 0;  // parameters are limited to 4 KiB
#endif

#if defined(__CUDACC__)
// Descriptor i: from the parameter buffer, or from device memory when kN == 0.
template <uint32_t kN>
__device__ __forceinline__ ulonglong2 LoadDesc(const InlineDesc<kN>& inl, const ulonglong2* dev,
                                               uint32_t i) {
  if constexpr (kN == 0) {
    return __ldg(dev + i);
  } else {
    return inl.d[i];
  }
}
#endif

// Enqueues launch(const InlineDesc<kN>& inl, const ulonglong2* dev) with the n descriptors at
// `host` either inline (dev == nullptr) or in a stream-ordered device copy (dev) that is freed
// after the launch in stream order. The host array may be reused as soon as this returns.
// Returns the launch error, if any.
template <uint32_t kN, typename Launch>
KernelStatus LaunchWithDescN(const ulonglong2* host, size_t n, cudaStream_t stream,
                             const char* what, Launch&& launch) {
  if constexpr (kN > 0) {
    InlineDesc<kN> inl;
    std::memcpy(inl.d, host, n * sizeof(ulonglong2));
    launch(inl, static_cast<const ulonglong2*>(nullptr));
    return CudaError(cudaGetLastError(), what);
  } else {
    void* d = nullptr;
    const size_t bytes = n * sizeof(ulonglong2);
    cudaError_t e = cudaMallocAsync(&d, bytes, stream);
    if (e != cudaSuccess) return CudaError(e, "cudaMallocAsync(descriptors)");
    // Pageable source: cudaMemcpyAsync returns once it is staged.
    e = cudaMemcpyAsync(d, host, bytes, cudaMemcpyHostToDevice, stream);
    if (e != cudaSuccess) {
      (void)cudaFreeAsync(d, stream);
      return CudaError(e, "cudaMemcpyAsync(descriptors)");
    }
    launch(InlineDesc<0>{}, static_cast<const ulonglong2*>(d));
    KernelStatus launched = CudaError(cudaGetLastError(), what);
    KernelStatus freed = CudaError(cudaFreeAsync(d, stream), "cudaFreeAsync(descriptors)");
    if (!launched.ok()) return launched;
    return freed;
  }
}

template <typename Launch>
KernelStatus LaunchWithDesc(const ulonglong2* host, size_t n, cudaStream_t stream, const char* what,
                            Launch&& launch) {
  if (n <= kInlineSmall) return LaunchWithDescN<kInlineSmall>(host, n, stream, what, launch);
  if constexpr (kInlineLarge > 0) {
    if (n <= kInlineLarge) return LaunchWithDescN<kInlineLarge>(host, n, stream, what, launch);
  }
  return LaunchWithDescN<0>(host, n, stream, what, launch);
}

}  // namespace strata::kernels::cuda
