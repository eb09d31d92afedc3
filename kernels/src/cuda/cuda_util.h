// Helpers shared by the .cu files of kernels/: CUDA error mapping and descriptor upload.
// Thread-safety: stateless.
#pragma once

#include <cstdint>
#include <string>

#include <cuda_runtime_api.h>

#include "strata_kernels/kernel_status.h"

namespace strata::kernels::cuda {

inline KernelStatus CudaError(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return KernelStatus::Ok();
  return KernelStatus::DeviceError(std::string(what) + ": " + cudaGetErrorName(e) + ": " +
                                   cudaGetErrorString(e));
}

// Stream-ordered copy of a small host descriptor array to the device. The source is pageable
// memory, so cudaMemcpyAsync returns once it is staged and the caller may reuse it at once. The
// device copy is freed in stream order after the kernels that read it (FreeDescriptors).
inline KernelStatus UploadDescriptors(const void* host, size_t bytes, cudaStream_t stream,
                                      void** device) {
  void* d = nullptr;
  cudaError_t e = cudaMallocAsync(&d, bytes, stream);
  if (e != cudaSuccess) return CudaError(e, "cudaMallocAsync(descriptors)");
  e = cudaMemcpyAsync(d, host, bytes, cudaMemcpyHostToDevice, stream);
  if (e != cudaSuccess) {
    (void)cudaFreeAsync(d, stream);
    return CudaError(e, "cudaMemcpyAsync(descriptors)");
  }
  *device = d;
  return KernelStatus::Ok();
}

inline KernelStatus FreeDescriptors(void* device, cudaStream_t stream) {
  return CudaError(cudaFreeAsync(device, stream), "cudaFreeAsync(descriptors)");
}

}  // namespace strata::kernels::cuda
