// cuda_paged.h in a build without CUDA: every factory answers NotSupported, so a KV cache in
// device memory is refused at RegisterKvCache with a clear message.
#include "client/cuda_paged.h"

namespace strata {
namespace {

Status NoCuda() {
  return Status::NotSupported(
      "KV pages in CUDA device memory: this libstrata was built without CUDA (configure with "
      "STRATA_WITH_CUDA=on and the CUDA toolkit); register host pages");
}

}  // namespace

Result<std::unique_ptr<DeviceMemory>> DeviceMemory::Create(Channel*) { return NoCuda(); }

Result<std::unique_ptr<DeviceKvCache>> DeviceKvCache::Create(DeviceMemory*, int,
                                                             const kernels::PagedKvSpec&,
                                                             std::span<void* const>, Codec) {
  return NoCuda();
}

}  // namespace strata
