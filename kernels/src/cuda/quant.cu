// CUDA lossy codecs (cuda_kernels.h). Same payload bytes as quant_cpu.cc: the per-element math is
// quant_math.h, group reductions are max/min (order-independent), and nvcc runs with
// --fmad=false. Mapping of work:
//   FP8      one CTA per (block, chunk): pass 1 reduces the chunk's amax, pass 2 quantizes
//            (the second read of the 32 KiB chunk hits L1/L2)
//   INT8     one thread per 8 elements (16 B); a group of G is G/8 adjacent lanes reduced with
//            warp shuffles
//   INT4     values as INT8 (groups of Gv); keys one thread per 4 channels of a layer, the
//            block's 16 tokens loaded into registers at once (8 B per lane, 256 B per warp row),
//            then min/max, scales and codes from those registers (longer blocks: 16 at a time,
//            read twice)
//   decode   one thread per 8 elements
#include <string>
#include <type_traits>

#include "cuda_util.h"
#include "strata_kernels/cuda_kernels.h"
#include "strata_kernels/quant_math.h"

namespace strata::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr uint32_t kFlagNonFinite = 1;
constexpr uint32_t kFlagRange = 2;

struct CodecParams {
  const ulonglong2* desc;  // per block {input, output}; null when inline (cuda_util.h)
  uint32_t* flags;         // may be null
  uint32_t n;
  BlockShape shape;
  LossyLayout lay;
  Codec codec;
  bool bf16;
};

template <uint32_t kN>
__device__ inline const void* InPtr(const CodecParams& p, const InlineDesc<kN>& inl, uint32_t b) {
  return reinterpret_cast<const void*>(LoadDesc(inl, p.desc, b).x);
}
template <uint32_t kN>
__device__ inline void* OutPtr(const CodecParams& p, const InlineDesc<kN>& inl, uint32_t b) {
  return reinterpret_cast<void*>(LoadDesc(inl, p.desc, b).y);
}

__device__ inline void Load8(const void* base, uint64_t vec, bool bf16, float x[8]) {
  const uint4 v = reinterpret_cast<const uint4*>(base)[vec];
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const uint16_t lo = static_cast<uint16_t>(w[k] & 0xffff), hi = static_cast<uint16_t>(w[k] >> 16);
    x[2 * k] = bf16 ? Bf16ToFloat(lo) : HalfToFloat(lo);
    x[2 * k + 1] = bf16 ? Bf16ToFloat(hi) : HalfToFloat(hi);
  }
}

__device__ inline void Store8(void* base, uint64_t vec, bool bf16, const float x[8]) {
  uint32_t w[4];
#pragma unroll
  for (int k = 0; k < 4; ++k)
    w[k] = uint32_t{StoreKv16(bf16, x[2 * k])} | (uint32_t{StoreKv16(bf16, x[2 * k + 1])} << 16);
  reinterpret_cast<uint4*>(base)[vec] = make_uint4(w[0], w[1], w[2], w[3]);
}

__device__ inline void Flag(const CodecParams& p, uint32_t b, uint32_t f) {
  if (f && p.flags) atomicOr(&p.flags[b], f);
}

// Header and the zero padding between sections (the CPU reference memsets them).
__device__ void WriteHeader(const CodecParams& p, char* out) {
  PayloadHeader h;
  h.magic = kPayloadMagic;
  h.codec = static_cast<uint16_t>(p.codec);
  h.dtype = static_cast<uint8_t>(p.shape.dtype);
  h.planes = static_cast<uint8_t>(p.shape.planes);
  h.raw_bytes = static_cast<uint32_t>(p.shape.bytes());
  h.body_bytes = static_cast<uint32_t>(p.lay.total_bytes - kPayloadHeaderBytes);
  const uint32_t* hw = reinterpret_cast<const uint32_t*>(&h);
  uint32_t* o = reinterpret_cast<uint32_t*>(out);
  for (int i = 0; i < 4; ++i) o[i] = hw[i];
  auto zero = [&](uint64_t from, uint64_t to) {
    for (uint64_t i = from; i < to; ++i) out[i] = 0;
  };
  const BlockShape& s = p.shape;
  const uint64_t row = uint64_t{s.num_kv_heads} * s.head_dim;
  if (p.codec == Codec::kFp8E4M3) {
    zero(p.lay.scale_offset + 4 * s.num_chunks(), p.lay.data_offset);
  } else if (p.codec == Codec::kInt8Group) {
    zero(p.lay.scale_offset + 4 * (s.elems() / p.lay.group), p.lay.data_offset);
  } else {
    const uint64_t kbytes = 2 * uint64_t{s.num_layers} * row;
    zero(p.lay.scale_offset + kbytes, p.lay.kmin_offset);
    if (s.planes == 2) {
      const uint64_t vbytes = 2 * uint64_t{s.num_layers} * s.block_size * row / p.lay.group;
      zero(p.lay.kmin_offset + kbytes, p.lay.vscale_offset);
      zero(p.lay.vscale_offset + vbytes, p.lay.vmin_offset);
      zero(p.lay.vmin_offset + vbytes, p.lay.data_offset);
    } else {
      zero(p.lay.kmin_offset + kbytes, p.lay.data_offset);
    }
  }
}

__device__ inline float WarpMax(float v, int lanes) {
  for (int off = 1; off < lanes; off <<= 1) v = MaxF(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}
__device__ inline float WarpMin(float v, int lanes) {
  for (int off = 1; off < lanes; off <<= 1) v = MinF(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

// ---- FP8: grid (num_chunks, n) ----
template <uint32_t kN>
__global__ void __launch_bounds__(kThreads) Fp8EncodeKernel(CodecParams p, InlineDesc<kN> inl) {
  const uint32_t b = blockIdx.y, c = blockIdx.x;
  const void* in = InPtr(p, inl, b);
  char* out = static_cast<char*>(OutPtr(p, inl, b));
  const uint64_t vecs = p.shape.chunk_elems() / 8, first = uint64_t{c} * vecs;
  float amax = 0.0f;
  uint32_t bad = 0;
#pragma unroll 4
  for (uint64_t v = threadIdx.x; v < vecs; v += kThreads) {
    float x[8];
    Load8(in, first + v, p.bf16, x);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      bad |= IsFiniteFloat(x[k]) ? 0u : kFlagNonFinite;
      amax = MaxF(amax, AbsF(x[k]));
    }
  }
  __shared__ float s_max[kThreads / 32];
  __shared__ uint32_t s_bad;
  if (threadIdx.x == 0) s_bad = 0;
  amax = WarpMax(amax, 32);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) s_max[threadIdx.x / 32] = amax;
  if (bad) atomicOr(&s_bad, bad);
  __syncthreads();
  amax = s_max[0];
  for (int w = 1; w < kThreads / 32; ++w) amax = MaxF(amax, s_max[w]);
  const SymScale ss = MakeSymScale(amax, kE4m3Max);
  if (threadIdx.x == 0) {
    Flag(p, b, s_bad);
    reinterpret_cast<float*>(out + p.lay.scale_offset)[c] = ss.scale;
    if (c == 0) WriteHeader(p, out);
  }
  uint2* q = reinterpret_cast<uint2*>(out + p.lay.data_offset);
#pragma unroll 4
  for (uint64_t v = threadIdx.x; v < vecs; v += kThreads) {
    float x[8];
    Load8(in, first + v, p.bf16, x);
    uint32_t w[2] = {0, 0};
#pragma unroll
    for (int k = 0; k < 8; ++k) w[k / 4] |= uint32_t{Fp8Quant(x[k], ss.inv)} << (8 * (k % 4));
    q[first + v] = make_uint2(w[0], w[1]);
  }
}

// ---- INT8: grid (ceil(vecs / kThreads), n) ----
template <uint32_t kN>
__global__ void __launch_bounds__(kThreads) Int8EncodeKernel(CodecParams p, InlineDesc<kN> inl) {
  const uint32_t b = blockIdx.y;
  const uint64_t vecs = p.shape.elems() / 8;
  const uint64_t v = uint64_t{blockIdx.x} * kThreads + threadIdx.x;
  const bool valid = v < vecs;
  const int lanes = static_cast<int>(p.lay.group / 8);
  const void* in = InPtr(p, inl, b);
  char* out = static_cast<char*>(OutPtr(p, inl, b));
  float x[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  uint32_t bad = 0;
  float amax = 0.0f;
  if (valid) {
    Load8(in, v, p.bf16, x);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      bad |= IsFiniteFloat(x[k]) ? 0u : kFlagNonFinite;
      amax = MaxF(amax, AbsF(x[k]));
    }
  }
  amax = WarpMax(amax, lanes);
  if (!valid) return;
  Flag(p, b, bad);
  const SymScale ss = MakeSymScale(amax, 127.0f);
  if (v % lanes == 0) reinterpret_cast<float*>(out + p.lay.scale_offset)[v * 8 / p.lay.group] = ss.scale;
  if (v == 0) WriteHeader(p, out);
  uint32_t w[2] = {0, 0};
#pragma unroll
  for (int k = 0; k < 8; ++k)
    w[k / 4] |= uint32_t{static_cast<uint8_t>(Int8Quant(x[k], ss.inv))} << (8 * (k % 4));
  reinterpret_cast<uint2*>(out + p.lay.data_offset)[v] = make_uint2(w[0], w[1]);
}

__device__ inline uint32_t CheckInt4(float x) {
  if (!IsFiniteFloat(x)) return kFlagNonFinite;
  return AbsF(x) > kInt4MaxAbs ? kFlagRange : 0u;
}

// ---- INT4 values (planes == 2): grid (ceil(L * chunk_vecs / (kThreads * kValueVecs)), n) ----
// Each thread quantizes kValueVecs vectors of 8 values, 32 vectors apart (a warp covers
// 32 * kValueVecs consecutive vectors, each load coalesced), all its loads issued first. A group
// of Gv values is Gv/8 adjacent lanes, reduced with warp shuffles. Vector indices are 32-bit (a
// block is under 4 GiB).
constexpr uint32_t kValueVecs = 4;

template <uint32_t kN>
__global__ void __launch_bounds__(kThreads)
    Int4ValueEncodeKernel(CodecParams p, InlineDesc<kN> inl) {
  const uint32_t b = blockIdx.y;
  const BlockShape& s = p.shape;
  const uint32_t chunk_vecs = static_cast<uint32_t>(s.chunk_elems() / 8);
  const uint32_t total = s.num_layers * chunk_vecs;
  const int lanes = static_cast<int>(p.lay.group / 8);
  const uint32_t lane = threadIdx.x & 31;
  const uint32_t first = (blockIdx.x * kThreads + (threadIdx.x - lane)) * kValueVecs + lane;
  const uint4* in = static_cast<const uint4*>(InPtr(p, inl, b));
  char* out = static_cast<char*>(OutPtr(p, inl, b));
  uint4 raw[kValueVecs];
  uint32_t vec[kValueVecs];
#pragma unroll
  for (uint32_t u = 0; u < kValueVecs; ++u) {
    const uint32_t vv = first + u * 32;
    const uint32_t l = vv / chunk_vecs, k = vv - l * chunk_vecs;
    vec[u] = (l * 2 + 1) * chunk_vecs + k;  // the value chunk of layer l
    raw[u] = vv < total ? in[vec[u]] : make_uint4(0, 0, 0, 0);
  }
  uint32_t bad_any = 0;
#pragma unroll
  for (uint32_t u = 0; u < kValueVecs; ++u) {
    const uint32_t vv = first + u * 32;
    const bool valid = vv < total;
    const uint32_t w4[4] = {raw[u].x, raw[u].y, raw[u].z, raw[u].w};
    float x[8];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint16_t lo = static_cast<uint16_t>(w4[k] & 0xffff),
                     hi = static_cast<uint16_t>(w4[k] >> 16);
      x[2 * k] = p.bf16 ? Bf16ToFloat(lo) : HalfToFloat(lo);
      x[2 * k + 1] = p.bf16 ? Bf16ToFloat(hi) : HalfToFloat(hi);
    }
    uint32_t bad = 0;
    float mn = x[0], mx = x[0];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      bad |= CheckInt4(x[j]);
      mn = MinF(mn, x[j]);
      mx = MaxF(mx, x[j]);
    }
    mn = WarpMin(mn, lanes);  // every lane takes part (invalid lanes hold zeros)
    mx = WarpMax(mx, lanes);
    if (!valid) continue;
    bad_any |= bad;
    if (bad) continue;  // MakeInt4Params needs finite, in-range input; the payload is flagged
    const Int4Params prm = MakeInt4Params(mn, mx);
    const uint32_t l = vv / chunk_vecs, k = vv - l * chunk_vecs;
    if (k % lanes == 0) {
      const uint64_t gi =
          uint64_t{l} * (s.chunk_elems() / p.lay.group) + uint64_t{k} * 8 / p.lay.group;
      reinterpret_cast<uint16_t*>(out + p.lay.vscale_offset)[gi] = prm.scale_h;
      reinterpret_cast<uint16_t*>(out + p.lay.vmin_offset)[gi] = prm.min_h;
    }
    uint32_t w = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j) w |= uint32_t{Int4Quant(x[j], prm.min_f, prm.inv)} << (4 * j);
    reinterpret_cast<uint32_t*>(out + p.lay.data_offset)[vec[u]] = w;
  }
  Flag(p, b, bad_any);
}

// ---- INT4 keys (plane 0, or the MLA latent): grid (ceil(L * row/4 / kThreads), n) ----
// One thread per 4 channels of a layer (8-byte loads; a warp reads 256 contiguous bytes of a
// token row). The block's tokens are loaded kKeyTokens at a time into registers, all those loads
// in flight together; when block_size <= kKeyTokens (16, vLLM's default) the quantize pass reads
// the same registers, larger blocks read their key chunk a second time (from L1/L2). The bound of
// 4 CTAs per SM caps it at 64 registers (no spills): 128 KiB of loads in flight per SM.
constexpr uint32_t kKeyTokens = 16;

__device__ inline void Unpack4(uint2 v, bool bf16, float x[4]) {
  const uint32_t w[2] = {v.x, v.y};
#pragma unroll
  for (int k = 0; k < 2; ++k) {
    const uint16_t lo = static_cast<uint16_t>(w[k] & 0xffff),
                   hi = static_cast<uint16_t>(w[k] >> 16);
    x[2 * k] = bf16 ? Bf16ToFloat(lo) : HalfToFloat(lo);
    x[2 * k + 1] = bf16 ? Bf16ToFloat(hi) : HalfToFloat(hi);
  }
}

template <uint32_t kN>
__global__ void __launch_bounds__(kThreads, 4)
    Int4KeyEncodeKernel(CodecParams p, InlineDesc<kN> inl) {
  const uint32_t b = blockIdx.y;
  const BlockShape& s = p.shape;
  const uint32_t tokens = s.block_size;
  const uint64_t row_q = uint64_t{s.num_kv_heads} * s.head_dim / 4;  // 4-channel groups per row
  const uint64_t t_id = uint64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (t_id >= uint64_t{s.num_layers} * row_q) return;
  const uint64_t l = t_id / row_q, cq = t_id % row_q;
  const uint64_t first = l * s.planes * tokens * row_q + cq;  // token 0's 4 channels
  const uint2* in = static_cast<const uint2*>(InPtr(p, inl, b));
  char* out = static_cast<char*>(OutPtr(p, inl, b));
  if (t_id == 0) WriteHeader(p, out);
  // min/max over the tokens: order-independent up to the sign of a zero (MakeInt4Params).
  float mn[4], mx[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    mn[j] = __int_as_float(0x7f800000);   // +inf
    mx[j] = __int_as_float(0xff800000);   // -inf
  }
  uint32_t bad = 0;
  uint2 raw[kKeyTokens];
  for (uint32_t t0 = 0; t0 < tokens; t0 += kKeyTokens) {
#pragma unroll
    for (uint32_t t = 0; t < kKeyTokens; ++t)
      if (t0 + t < tokens) raw[t] = in[first + (t0 + t) * row_q];
#pragma unroll
    for (uint32_t t = 0; t < kKeyTokens; ++t) {
      if (t0 + t < tokens) {
        float x[4];
        Unpack4(raw[t], p.bf16, x);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          bad |= CheckInt4(x[j]);
          mn[j] = MinF(mn[j], x[j]);
          mx[j] = MaxF(mx[j], x[j]);
        }
      }
    }
  }
  Flag(p, b, bad);
  if (bad) return;
  float min_f[4], inv[4];
  uint32_t sw[2] = {0, 0}, mw[2] = {0, 0};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const Int4Params prm = MakeInt4Params(mn[j], mx[j]);
    min_f[j] = prm.min_f;
    inv[j] = prm.inv;
    sw[j / 2] |= uint32_t{prm.scale_h} << (16 * (j % 2));
    mw[j / 2] |= uint32_t{prm.min_h} << (16 * (j % 2));
  }
  const uint64_t pidx = l * row_q + cq;  // in units of 4 halves
  reinterpret_cast<uint2*>(out + p.lay.scale_offset)[pidx] = make_uint2(sw[0], sw[1]);
  reinterpret_cast<uint2*>(out + p.lay.kmin_offset)[pidx] = make_uint2(mw[0], mw[1]);
  uint16_t* nib = reinterpret_cast<uint16_t*>(out + p.lay.data_offset);  // 4 codes per u16
  for (uint32_t t0 = 0; t0 < tokens; t0 += kKeyTokens) {
    if (tokens > kKeyTokens) {
#pragma unroll
      for (uint32_t t = 0; t < kKeyTokens; ++t)
        if (t0 + t < tokens) raw[t] = in[first + (t0 + t) * row_q];
    }
#pragma unroll
    for (uint32_t t = 0; t < kKeyTokens; ++t) {
      if (t0 + t < tokens) {
        float x[4];
        Unpack4(raw[t], p.bf16, x);
        uint32_t w = 0;
#pragma unroll
        for (int j = 0; j < 4; ++j) w |= uint32_t{Int4Quant(x[j], min_f[j], inv[j])} << (4 * j);
        nib[first + (t0 + t) * row_q] = static_cast<uint16_t>(w);
      }
    }
  }
}

// ---- decode: grid (ceil(vecs / kThreads), n); desc = {payload, block} ----
template <uint32_t kN>
__global__ void __launch_bounds__(kThreads) DecodeKernel(CodecParams p, InlineDesc<kN> inl) {
  const uint32_t b = blockIdx.y;
  const BlockShape& s = p.shape;
  const uint64_t v = uint64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (v >= s.elems() / 8) return;
  const char* in = static_cast<const char*>(InPtr(p, inl, b));
  void* out = OutPtr(p, inl, b);
  const uint64_t e = v * 8;
  float x[8];
  if (p.codec == Codec::kFp8E4M3 || p.codec == Codec::kInt8Group) {
    const uint2 q = reinterpret_cast<const uint2*>(in + p.lay.data_offset)[v];
    const uint32_t w[2] = {q.x, q.y};
    if (p.codec == Codec::kFp8E4M3) {
      const float scale = reinterpret_cast<const float*>(in + p.lay.scale_offset)[e / s.chunk_elems()];
#pragma unroll
      for (int k = 0; k < 8; ++k)
        x[k] = Fp8Dequant(static_cast<uint8_t>(w[k / 4] >> (8 * (k % 4))), scale);
    } else {
      const float scale = reinterpret_cast<const float*>(in + p.lay.scale_offset)[e / p.lay.group];
#pragma unroll
      for (int k = 0; k < 8; ++k)
        x[k] = Int8Dequant(static_cast<int8_t>(w[k / 4] >> (8 * (k % 4))), scale);
    }
  } else {
    const uint32_t w = reinterpret_cast<const uint32_t*>(in + p.lay.data_offset)[v];
    const uint64_t chunk = s.chunk_elems(), row = uint64_t{s.num_kv_heads} * s.head_dim;
    const uint64_t c = e / chunk, k = e % chunk, l = c / s.planes;
    if (c % s.planes == 0) {
      const uint64_t pidx = (l * row + k % row) / 8;
      const uint4 sv = reinterpret_cast<const uint4*>(in + p.lay.scale_offset)[pidx];
      const uint4 mv = reinterpret_cast<const uint4*>(in + p.lay.kmin_offset)[pidx];
      const uint32_t sw[4] = {sv.x, sv.y, sv.z, sv.w}, mw[4] = {mv.x, mv.y, mv.z, mv.w};
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const Int4Params prm =
            Int4ParamsFromStored(static_cast<uint16_t>(mw[j / 2] >> (16 * (j % 2))),
                                 static_cast<uint16_t>(sw[j / 2] >> (16 * (j % 2))));
        x[j] = Int4Dequant((w >> (4 * j)) & 0xf, prm.min_f, prm.scale_f);
      }
    } else {
      const uint64_t gi = l * (chunk / p.lay.group) + k / p.lay.group;
      const Int4Params prm =
          Int4ParamsFromStored(reinterpret_cast<const uint16_t*>(in + p.lay.vmin_offset)[gi],
                               reinterpret_cast<const uint16_t*>(in + p.lay.vscale_offset)[gi]);
#pragma unroll
      for (int j = 0; j < 8; ++j) x[j] = Int4Dequant((w >> (4 * j)) & 0xf, prm.min_f, prm.scale_f);
    }
  }
  Store8(out, v, p.bf16, x);
}

unsigned Blocks(uint64_t threads) { return static_cast<unsigned>((threads + kThreads - 1) / kThreads); }

KernelStatus PrepareDesc(std::vector<uint64_t>& desc, std::span<const void* const> a,
                         std::span<const void* const> b, const char* what_a, const char* what_b) {
  if (a.size() != b.size())
    return KernelStatus::InvalidArgument(std::to_string(a.size()) + " " + what_a + " for " +
                                         std::to_string(b.size()) + " " + what_b);
  if (a.size() > 65535)
    return KernelStatus::InvalidArgument("at most 65535 blocks per call");
  desc.resize(2 * a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    desc[2 * i] = reinterpret_cast<uint64_t>(a[i]);
    desc[2 * i + 1] = reinterpret_cast<uint64_t>(b[i]);
    if (a[i] == nullptr || b[i] == nullptr || desc[2 * i] % 16 || desc[2 * i + 1] % 16)
      return KernelStatus::InvalidArgument("buffer " + std::to_string(i) +
                                           " is null or not 16-byte aligned");
  }
  return KernelStatus::Ok();
}

}  // namespace

KernelStatus CudaCodec::Create(Codec codec, const BlockShape& shape,
                               std::unique_ptr<CudaCodec>* out) {
  STRATA_KERNELS_RETURN_IF_ERROR(CheckLossyShape(codec, shape));
  if (shape.head_dim % 8 != 0)
    return KernelStatus::NotSupported("CUDA codecs need head_dim % 8 == 0, not " +
                                      std::to_string(shape.head_dim));
  std::unique_ptr<CudaCodec> c(new CudaCodec());
  c->codec_ = codec;
  c->shape_ = shape;
  c->encoded_bytes_ = LossyEncodedBytes(codec, shape);
  *out = std::move(c);
  return KernelStatus::Ok();
}

KernelStatus CudaCodec::Encode(std::span<const void* const> blocks, std::span<void* const> payloads,
                               uint32_t* d_flags, cudaStream_t stream) {
  STRATA_KERNELS_RETURN_IF_ERROR(PrepareDesc(
      host_desc_, blocks,
      std::span<const void* const>(reinterpret_cast<const void* const*>(payloads.data()),
                                   payloads.size()),
      "blocks", "payloads"));
  if (blocks.empty()) return KernelStatus::Ok();
  const uint32_t n = static_cast<uint32_t>(blocks.size());
  if (d_flags)
    STRATA_KERNELS_RETURN_IF_ERROR(
        CudaError(cudaMemsetAsync(d_flags, 0, n * sizeof(uint32_t), stream), "cudaMemsetAsync"));
  CodecParams p{nullptr, d_flags, n, shape_, ComputeLossyLayout(codec_, shape_), codec_,
                shape_.dtype == KvDtype::kBFloat16};
  const Codec codec = codec_;
  const BlockShape& shape = shape_;
  return LaunchWithDesc(
      reinterpret_cast<const ulonglong2*>(host_desc_.data()), n, stream, "encode launch",
      [&](const auto& inl, const ulonglong2* dev) {
        constexpr uint32_t kN = std::remove_cvref_t<decltype(inl)>::kSize;
        p.desc = dev;
        switch (codec) {
          case Codec::kFp8E4M3:
            Fp8EncodeKernel<kN><<<dim3(static_cast<unsigned>(shape.num_chunks()), n), kThreads, 0,
                                  stream>>>(p, inl);
            break;
          case Codec::kInt8Group:
            Int8EncodeKernel<kN>
                <<<dim3(Blocks(shape.elems() / 8), n), kThreads, 0, stream>>>(p, inl);
            break;
          default: {
            const uint64_t row_quads = uint64_t{shape.num_kv_heads} * shape.head_dim / 4;
            Int4KeyEncodeKernel<kN>
                <<<dim3(Blocks(shape.num_layers * row_quads), n), kThreads, 0, stream>>>(p, inl);
            if (shape.planes == 2) {
              const uint64_t vecs = shape.num_layers * shape.chunk_elems() / 8;
              Int4ValueEncodeKernel<kN>
                  <<<dim3(Blocks((vecs + kValueVecs - 1) / kValueVecs), n), kThreads, 0, stream>>>(
                      p, inl);
            }
            break;
          }
        }
      });
}

KernelStatus CudaCodec::Decode(std::span<const void* const> payloads, std::span<void* const> blocks,
                               cudaStream_t stream) {
  STRATA_KERNELS_RETURN_IF_ERROR(PrepareDesc(
      host_desc_, payloads,
      std::span<const void* const>(reinterpret_cast<const void* const*>(blocks.data()),
                                   blocks.size()),
      "payloads", "blocks"));
  if (payloads.empty()) return KernelStatus::Ok();
  const uint32_t n = static_cast<uint32_t>(payloads.size());
  CodecParams p{nullptr, nullptr, n, shape_, ComputeLossyLayout(codec_, shape_), codec_,
                shape_.dtype == KvDtype::kBFloat16};
  const unsigned grid_x = Blocks(shape_.elems() / 8);
  return LaunchWithDesc(reinterpret_cast<const ulonglong2*>(host_desc_.data()), n, stream,
                        "decode launch", [&](const auto& inl, const ulonglong2* dev) {
                          constexpr uint32_t kN = std::remove_cvref_t<decltype(inl)>::kSize;
                          p.desc = dev;
                          DecodeKernel<kN><<<dim3(grid_x, n), kThreads, 0, stream>>>(p, inl);
                        });
}

}  // namespace strata::kernels::cuda
