// CPU reference gather/scatter between an engine's paged KV cache and contiguous Strata blocks.
// The CUDA kernels (cuda_kernels.h) have the same semantics and are tested against these.
//
//   Gather  (store path): dst_blocks[i] <- engine block block_ids[i], all layers, all planes.
//   Scatter (load path):  engine block block_ids[i] <- src_blocks[i].
// Layouts: kv_layout.h. One block copy moves num_layers * planes chunks of chunk_bytes.
//
// Every argument is validated before any byte moves: a wrong count, a wrong buffer size, a null
// pointer or a block id outside [0, num_blocks) returns InvalidArgument and leaves every output
// untouched.
//
// Thread-safety: reentrant. Concurrent calls must not write overlapping bytes. Buffers are borrowed
// for the call only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "strata_kernels/kernel_status.h"
#include "strata_kernels/kv_layout.h"

namespace strata::kernels {

// REQUIRES: layers.size() == spec.num_layers and layers[l].size() == spec.layer_bytes();
//           block_ids.size() == dst_blocks.size(); each dst_blocks[i].size() >= block bytes.
KernelStatus GatherBlocksCpu(const PagedKvSpec& spec,
                             std::span<const std::span<const std::byte>> layers,
                             std::span<const int32_t> block_ids,
                             std::span<const std::span<std::byte>> dst_blocks);

// REQUIRES: as GatherBlocksCpu, with src_blocks in place of dst_blocks. Block ids should be
// distinct; if one repeats, the later source wins.
KernelStatus ScatterBlocksCpu(const PagedKvSpec& spec, std::span<const std::span<std::byte>> layers,
                              std::span<const int32_t> block_ids,
                              std::span<const std::span<const std::byte>> src_blocks);

// Head shards: the paged API stores each block as one shard per KV head, so that a rank of any
// tensor-parallel degree loads exactly its heads. A shard is the block of one head:
//   [layer][plane][token][head_dim]        (BlockShape with num_kv_heads = 1)
// Shard (i, h) is dst_shards[i * spec.num_kv_heads + h]: head h of the engine's (local) heads of
// block block_ids[i]. Only layers [layer_begin, layer_end) move (the layer-by-layer forms); each
// lands at its own offset of the shard, so calling once per layer builds whole shards.
// REQUIRES: as GatherBlocksCpu; shards.size() == block_ids.size() * spec.num_kv_heads, each of at
// least one shard's bytes; layer_begin < layer_end <= spec.num_layers.
KernelStatus GatherHeadShardsCpu(const PagedKvSpec& spec,
                                 std::span<const std::span<const std::byte>> layers,
                                 std::span<const int32_t> block_ids,
                                 std::span<const std::span<std::byte>> dst_shards,
                                 uint32_t layer_begin, uint32_t layer_end);
KernelStatus ScatterHeadShardsCpu(const PagedKvSpec& spec,
                                  std::span<const std::span<std::byte>> layers,
                                  std::span<const int32_t> block_ids,
                                  std::span<const std::span<const std::byte>> src_shards,
                                  uint32_t layer_begin, uint32_t layer_end);

}  // namespace strata::kernels
