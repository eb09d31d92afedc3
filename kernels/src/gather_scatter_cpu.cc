// CPU reference gather/scatter (gather_scatter.h): one memcpy per (block, layer, plane) chunk.
#include <cstring>
#include <string>

#include "strata_kernels/gather_scatter.h"

namespace strata::kernels {
namespace {

template <typename LayerSpan, typename BlockSpan>
KernelStatus Validate(const PagedKvSpec& spec, std::span<const LayerSpan> layers,
                      std::span<const int32_t> block_ids, std::span<const BlockSpan> blocks) {
  STRATA_KERNELS_RETURN_IF_ERROR(ValidatePagedKvSpec(spec));
  if (layers.size() != spec.num_layers)
    return KernelStatus::InvalidArgument("got " + std::to_string(layers.size()) +
                                         " layer buffers for " + std::to_string(spec.num_layers) +
                                         " layers");
  const uint64_t layer_bytes = spec.layer_bytes();
  for (size_t l = 0; l < layers.size(); ++l) {
    if (layers[l].data() == nullptr || layers[l].size() != layer_bytes)
      return KernelStatus::InvalidArgument(
          "layer " + std::to_string(l) + " buffer has " + std::to_string(layers[l].size()) +
          " bytes, the layout needs " + std::to_string(layer_bytes));
  }
  if (block_ids.size() != blocks.size())
    return KernelStatus::InvalidArgument(std::to_string(block_ids.size()) + " block ids for " +
                                         std::to_string(blocks.size()) + " block buffers");
  const uint64_t block_bytes = spec.block_shape().bytes();
  for (size_t i = 0; i < block_ids.size(); ++i) {
    if (block_ids[i] < 0 || static_cast<uint32_t>(block_ids[i]) >= spec.num_blocks)
      return KernelStatus::InvalidArgument("block id " + std::to_string(block_ids[i]) +
                                           " (entry " + std::to_string(i) +
                                           ") is outside [0, " +
                                           std::to_string(spec.num_blocks) + ")");
    if (blocks[i].data() == nullptr || blocks[i].size() < block_bytes)
      return KernelStatus::InvalidArgument("block buffer " + std::to_string(i) + " has " +
                                           std::to_string(blocks[i].size()) + " bytes, a block needs " +
                                           std::to_string(block_bytes));
  }
  return KernelStatus::Ok();
}

}  // namespace

KernelStatus GatherBlocksCpu(const PagedKvSpec& spec,
                             std::span<const std::span<const std::byte>> layers,
                             std::span<const int32_t> block_ids,
                             std::span<const std::span<std::byte>> dst_blocks) {
  STRATA_KERNELS_RETURN_IF_ERROR(Validate(spec, layers, block_ids, dst_blocks));
  const BlockShape shape = spec.block_shape();
  const uint64_t chunk = shape.chunk_bytes();
  for (size_t i = 0; i < block_ids.size(); ++i) {
    std::byte* dst = dst_blocks[i].data();
    for (uint32_t l = 0; l < spec.num_layers; ++l) {
      for (uint32_t p = 0; p < shape.planes; ++p) {
        const uint64_t src_chunk =
            EngineChunkIndex(spec.layout, spec.num_blocks, uint64_t(block_ids[i]), p);
        std::memcpy(dst + (uint64_t{l} * shape.planes + p) * chunk,
                    layers[l].data() + src_chunk * chunk, chunk);
      }
    }
  }
  return KernelStatus::Ok();
}

KernelStatus ScatterBlocksCpu(const PagedKvSpec& spec, std::span<const std::span<std::byte>> layers,
                              std::span<const int32_t> block_ids,
                              std::span<const std::span<const std::byte>> src_blocks) {
  STRATA_KERNELS_RETURN_IF_ERROR(Validate(spec, layers, block_ids, src_blocks));
  const BlockShape shape = spec.block_shape();
  const uint64_t chunk = shape.chunk_bytes();
  for (size_t i = 0; i < block_ids.size(); ++i) {
    const std::byte* src = src_blocks[i].data();
    for (uint32_t l = 0; l < spec.num_layers; ++l) {
      for (uint32_t p = 0; p < shape.planes; ++p) {
        const uint64_t dst_chunk =
            EngineChunkIndex(spec.layout, spec.num_blocks, uint64_t(block_ids[i]), p);
        std::memcpy(layers[l].data() + dst_chunk * chunk,
                    src + (uint64_t{l} * shape.planes + p) * chunk, chunk);
      }
    }
  }
  return KernelStatus::Ok();
}

}  // namespace strata::kernels
