// CPU reference gather/scatter (gather_scatter.h): one memcpy per (block, layer, plane) chunk.
#include <cstring>
#include <string>
#include <vector>

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
                                           std::to_string(blocks[i].size()) +
                                           " bytes, a block needs " + std::to_string(block_bytes));
  }
  return KernelStatus::Ok();
}

// Checks what Validate checks for head shards: the shard count and size and the layer range.
template <typename LayerSpan, typename ShardSpan>
KernelStatus ValidateShards(const PagedKvSpec& spec, std::span<const LayerSpan> layers,
                            std::span<const int32_t> block_ids, std::span<const ShardSpan> shards,
                            uint32_t layer_begin, uint32_t layer_end) {
  STRATA_KERNELS_RETURN_IF_ERROR(ValidatePagedKvSpec(spec));
  if (layer_begin >= layer_end || layer_end > spec.num_layers)
    return KernelStatus::InvalidArgument("layer range [" + std::to_string(layer_begin) + ", " +
                                         std::to_string(layer_end) + ") is not inside [0, " +
                                         std::to_string(spec.num_layers) + ")");
  const uint64_t heads = spec.num_kv_heads;
  if (shards.size() != block_ids.size() * heads)
    return KernelStatus::InvalidArgument(std::to_string(shards.size()) + " shard buffers for " +
                                         std::to_string(block_ids.size()) + " blocks of " +
                                         std::to_string(heads) + " heads");
  BlockShape shard = spec.block_shape();
  shard.num_kv_heads = 1;
  for (size_t i = 0; i < block_ids.size(); ++i) {
    for (uint64_t h = 0; h < heads; ++h) {
      const auto& b = shards[i * heads + h];
      if (b.data() == nullptr || b.size() < shard.bytes())
        return KernelStatus::InvalidArgument("shard buffer " + std::to_string(i * heads + h) +
                                             " has " + std::to_string(b.size()) +
                                             " bytes, a shard needs " +
                                             std::to_string(shard.bytes()));
    }
    if (block_ids[i] < 0 || static_cast<uint32_t>(block_ids[i]) >= spec.num_blocks)
      return KernelStatus::InvalidArgument("block id " + std::to_string(block_ids[i]) +
                                           " (entry " + std::to_string(i) +
                                           ") is outside [0, " +
                                           std::to_string(spec.num_blocks) + ")");
  }
  if (layers.size() != spec.num_layers)
    return KernelStatus::InvalidArgument("got " + std::to_string(layers.size()) +
                                         " layer buffers for " + std::to_string(spec.num_layers) +
                                         " layers");
  for (size_t l = 0; l < layers.size(); ++l)
    if (layers[l].data() == nullptr || layers[l].size() != spec.layer_bytes())
      return KernelStatus::InvalidArgument(
          "layer " + std::to_string(l) + " buffer has " + std::to_string(layers[l].size()) +
          " bytes, the layout needs " + std::to_string(spec.layer_bytes()));
  return KernelStatus::Ok();
}

// Copies one row; a compile-time size (kRow > 0) lets the compiler inline it as vector moves
// instead of calling memcpy for each 128- or 256-byte row. Ordinary stores, also for gathered
// shards: the client writes staging in rounds of a few MiB that the daemon copies right after
// from the shared cache (non-temporal stores would send them to DRAM and back; measured in
// docs/benchmarks.md, "engine").
template <uint64_t kRow>
inline void CopyRow(std::byte* dst, const std::byte* src, uint64_t row_bytes) {
  if constexpr (kRow > 0) {
    std::memcpy(dst, src, kRow);
  } else {
    std::memcpy(dst, src, row_bytes);
  }
}

// Moves one (block, layer, plane) chunk between the engine's [token][head][dim] tile and the
// shards' [token][dim] rows. kToShards: engine -> shards.
template <bool kToShards, uint64_t kRow>
void MoveChunk(std::byte* engine_chunk, const std::byte* const* shard_rows, uint32_t heads,
               uint32_t tokens, uint64_t row_bytes) {
  if (heads == 1) {  // the tile is the shard's rows: one copy
    if constexpr (kToShards)
      std::memcpy(const_cast<std::byte*>(shard_rows[0]), engine_chunk, tokens * row_bytes);
    else
      std::memcpy(engine_chunk, shard_rows[0], tokens * row_bytes);
    return;
  }
  for (uint32_t t = 0; t < tokens; ++t) {
    std::byte* token = engine_chunk + uint64_t{t} * heads * row_bytes;
    for (uint32_t h = 0; h < heads; ++h) {
      std::byte* shard = const_cast<std::byte*>(shard_rows[h]) + t * row_bytes;
      if constexpr (kToShards)
        CopyRow<kRow>(shard, token + h * row_bytes, row_bytes);
      else
        CopyRow<kRow>(token + h * row_bytes, shard, row_bytes);
    }
  }
}

template <bool kToShards, typename LayerSpan, typename ShardSpan>
void MoveShards(const PagedKvSpec& spec, std::span<const LayerSpan> layers,
                std::span<const int32_t> block_ids, std::span<const ShardSpan> shards,
                uint32_t layer_begin, uint32_t layer_end) {
  const BlockShape shape = spec.block_shape();
  const uint64_t chunk = shape.chunk_bytes();
  const uint32_t heads = spec.num_kv_heads;
  const uint64_t row_bytes = uint64_t{spec.head_dim} * KvDtypeBytes(spec.dtype);
  const uint64_t shard_chunk = uint64_t{spec.block_size} * row_bytes;
  std::vector<const std::byte*> rows(heads);
  for (size_t i = 0; i < block_ids.size(); ++i) {
    for (uint32_t l = layer_begin; l < layer_end; ++l) {
      for (uint32_t p = 0; p < shape.planes; ++p) {
        const uint64_t at = (uint64_t{l} * shape.planes + p) * shard_chunk;
        for (uint32_t h = 0; h < heads; ++h) rows[h] = shards[i * heads + h].data() + at;
        const uint64_t c =
            EngineChunkIndex(spec.layout, spec.num_blocks, uint64_t(block_ids[i]), p);
        auto* engine = const_cast<std::byte*>(layers[l].data()) + c * chunk;
        switch (row_bytes) {  // head_dim 128 or 64 in 16-bit dtypes, 128 in fp8
          case 256:
            MoveChunk<kToShards, 256>(engine, rows.data(), heads, spec.block_size, row_bytes);
            break;
          case 128:
            MoveChunk<kToShards, 128>(engine, rows.data(), heads, spec.block_size, row_bytes);
            break;
          default: MoveChunk<kToShards, 0>(engine, rows.data(), heads, spec.block_size, row_bytes);
        }
      }
    }
  }
}

}  // namespace

KernelStatus GatherHeadShardsCpu(const PagedKvSpec& spec,
                                 std::span<const std::span<const std::byte>> layers,
                                 std::span<const int32_t> block_ids,
                                 std::span<const std::span<std::byte>> dst_shards,
                                 uint32_t layer_begin, uint32_t layer_end) {
  STRATA_KERNELS_RETURN_IF_ERROR(
      ValidateShards(spec, layers, block_ids, dst_shards, layer_begin, layer_end));
  MoveShards<true>(spec, layers, block_ids, dst_shards, layer_begin, layer_end);
  return KernelStatus::Ok();
}

KernelStatus ScatterHeadShardsCpu(const PagedKvSpec& spec,
                                  std::span<const std::span<std::byte>> layers,
                                  std::span<const int32_t> block_ids,
                                  std::span<const std::span<const std::byte>> src_shards,
                                  uint32_t layer_begin, uint32_t layer_end) {
  STRATA_KERNELS_RETURN_IF_ERROR(
      ValidateShards(spec, layers, block_ids, src_shards, layer_begin, layer_end));
  MoveShards<false>(spec, layers, block_ids, src_shards, layer_begin, layer_end);
  return KernelStatus::Ok();
}

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
