// Paged KV layouts of serving engines and the one contiguous Strata block layout.
//
// Engine layouts, per layer (one base pointer per layer; element type `dtype`):
//   kVllmFlashAttn  [2, num_blocks, block_size, kv_heads, head_dim]   plane (K=0, V=1) outermost
//   kFlashInfer     [num_blocks, 2, block_size, kv_heads, head_dim]   FlashInfer "NHD"
//   kMla            [num_blocks, block_size, latent_dim]              one plane; kv_heads == 1
// In every layout the [block_size, kv_heads, head_dim] tile of one (plane, block) is contiguous:
// a "chunk" of block_size * kv_heads * head_dim * dtype_size bytes.
//
// Strata block layout (docs/kernels.md), one contiguous buffer per block:
//   [layer][plane][token][kv_head][head_dim]        planes = 2 (K, V), or 1 for MLA
// i.e. chunk (layer l, plane p) of a block sits at byte offset (l * planes + p) * chunk_bytes.
// Gather and scatter therefore copy num_layers * planes chunks per block.
//
// KvDtype values equal strata::KvDtype (lib/include/strata/namespace.h); tests/kernels checks it.
//
// Thread-safety: plain values and pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "strata_kernels/hd.h"
#include "strata_kernels/kernel_status.h"

namespace strata::kernels {

// Element type of the KV cache. Numeric values MUST equal strata::KvDtype's.
enum class KvDtype : uint8_t {
  kFloat16 = 1,
  kBFloat16 = 2,
  kFloat8E4M3 = 3,
  kFloat8E5M2 = 4,
  kFloat32 = 5,
};

enum class PagedLayout : uint8_t {
  kVllmFlashAttn = 1,  // vLLM flash-attn backend: [2, num_blocks, block_size, kv_heads, head_dim]
  kFlashInfer = 2,     // FlashInfer NHD: [num_blocks, 2, block_size, kv_heads, head_dim]
  kMla = 3,            // MLA latent cache: [num_blocks, block_size, latent_dim]
};

std::string_view KvDtypeName(KvDtype dtype);
std::string_view PagedLayoutName(PagedLayout layout);

// Bytes per element; 0 for an unknown value.
STRATA_KERNELS_HD inline uint32_t KvDtypeBytes(KvDtype dtype) {
  switch (dtype) {
    case KvDtype::kFloat16:
    case KvDtype::kBFloat16:
      return 2;
    case KvDtype::kFloat8E4M3:
    case KvDtype::kFloat8E5M2:
      return 1;
    case KvDtype::kFloat32:
      return 4;
  }
  return 0;
}

// The shape of one Strata block (uncompressed).
struct BlockShape {
  uint32_t num_layers = 0;    // REQUIRES: > 0
  uint32_t planes = 2;        // 2 (K and V) or 1 (MLA latent)
  uint32_t block_size = 16;   // tokens per block. Default: 16 (vLLM). REQUIRES: > 0
  uint32_t num_kv_heads = 0;  // 1 for MLA. REQUIRES: > 0
  uint32_t head_dim = 0;      // latent dim for MLA. REQUIRES: > 0
  KvDtype dtype = KvDtype::kFloat16;

  // Elements of one (layer, plane) chunk: block_size * num_kv_heads * head_dim.
  STRATA_KERNELS_HD uint64_t chunk_elems() const {
    return uint64_t{block_size} * num_kv_heads * head_dim;
  }
  STRATA_KERNELS_HD uint64_t chunk_bytes() const { return chunk_elems() * KvDtypeBytes(dtype); }
  STRATA_KERNELS_HD uint64_t num_chunks() const { return uint64_t{num_layers} * planes; }
  STRATA_KERNELS_HD uint64_t elems() const { return num_chunks() * chunk_elems(); }
  STRATA_KERNELS_HD uint64_t bytes() const { return num_chunks() * chunk_bytes(); }
};

// InvalidArgument naming the bad field, or OK. Also bounds a block to < 4 GiB.
KernelStatus ValidateBlockShape(const BlockShape& shape);

// An engine's paged KV cache.
struct PagedKvSpec {
  PagedLayout layout = PagedLayout::kVllmFlashAttn;
  KvDtype dtype = KvDtype::kFloat16;
  uint32_t num_layers = 0;    // REQUIRES: > 0
  uint32_t num_blocks = 0;    // blocks in the engine's pool (per layer). REQUIRES: > 0
  uint32_t block_size = 16;   // tokens per block. Default: 16. REQUIRES: > 0
  uint32_t num_kv_heads = 0;  // REQUIRES: > 0; == 1 for kMla
  uint32_t head_dim = 0;      // latent_dim for kMla. REQUIRES: > 0

  BlockShape block_shape() const {
    return BlockShape{num_layers, layout == PagedLayout::kMla ? 1u : 2u, block_size, num_kv_heads,
                      head_dim, dtype};
  }
  // Bytes of one layer's cache: planes * num_blocks * chunk_bytes.
  uint64_t layer_bytes() const { return block_shape().planes * uint64_t{num_blocks} *
                                        block_shape().chunk_bytes(); }
};

KernelStatus ValidatePagedKvSpec(const PagedKvSpec& spec);

// Chunk index of (plane, block) inside one engine layer, in units of chunk_bytes.
STRATA_KERNELS_HD inline uint64_t EngineChunkIndex(PagedLayout layout, uint32_t num_blocks,
                                                   uint64_t block, uint32_t plane) {
  switch (layout) {
    case PagedLayout::kVllmFlashAttn:
      return uint64_t{plane} * num_blocks + block;
    case PagedLayout::kFlashInfer:
      return block * 2 + plane;
    case PagedLayout::kMla:
      return block;
  }
  return 0;
}

}  // namespace strata::kernels
