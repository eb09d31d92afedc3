// CUDA lossy codecs (cuda_kernels.h). Same payload bytes as quant_cpu.cc: the per-element math is
// quant_math.h, group reductions are max/min (order-independent), and nvcc runs with
// --fmad=false. Mapping of work:
//   FP8      one CTA per (block, chunk): pass 1 reduces the chunk's amax, pass 2 quantizes
//            (the second read of the 32 KiB chunk hits L1/L2)
//   INT8     one thread per 8 elements (16 B); a group of G is G/8 adjacent lanes reduced with
//            warp shuffles
//   INT4     values as INT8 (groups of Gv); keys one thread per 8 channels of a layer, looping
//            over the block's tokens twice (coalesced 16 B rows)
//   decode   one thread per 8 elements
#include <string>

#include "cuda_util.h"
#include "strata_kernels/cuda_kernels.h"
#include "strata_kernels/quant_math.h"

namespace strata::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr uint32_t kFlagNonFinite = 1;
constexpr uint32_t kFlagRange = 2;

struct CodecParams {
  const uint64_t* desc;  // [in_0 .. in_{n-1}, out_0 .. out_{n-1}]
  uint32_t* flags;       // may be null
  uint32_t n;
  BlockShape shape;
  LossyLayout lay;
  Codec codec;
  bool bf16;
};

__device__ inline const void* InPtr(const CodecParams& p, uint32_t b) {
  return reinterpret_cast<const void*>(p.desc[b]);
}
__device__ inline void* OutPtr(const CodecParams& p, uint32_t b) {
  return reinterpret_cast<void*>(p.desc[p.n + b]);
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
__global__ void __launch_bounds__(kThreads) Fp8EncodeKernel(CodecParams p) {
  const uint32_t b = blockIdx.y, c = blockIdx.x;
  const void* in = InPtr(p, b);
  char* out = static_cast<char*>(OutPtr(p, b));
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
__global__ void __launch_bounds__(kThreads) Int8EncodeKernel(CodecParams p) {
  const uint32_t b = blockIdx.y;
  const uint64_t vecs = p.shape.elems() / 8;
  const uint64_t v = uint64_t{blockIdx.x} * kThreads + threadIdx.x;
  const bool valid = v < vecs;
  const int lanes = static_cast<int>(p.lay.group / 8);
  const void* in = InPtr(p, b);
  char* out = static_cast<char*>(OutPtr(p, b));
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

// ---- INT4 values (planes == 2): grid (ceil(L * chunk_vecs / kThreads), n) ----
__global__ void __launch_bounds__(kThreads) Int4ValueEncodeKernel(CodecParams p) {
  const uint32_t b = blockIdx.y;
  const BlockShape& s = p.shape;
  const uint64_t chunk_vecs = s.chunk_elems() / 8;
  const uint64_t vv = uint64_t{blockIdx.x} * kThreads + threadIdx.x;
  const bool valid = vv < uint64_t{s.num_layers} * chunk_vecs;
  const int lanes = static_cast<int>(p.lay.group / 8);
  const uint64_t l = vv / chunk_vecs, k = vv % chunk_vecs;
  const uint64_t vec = (l * 2 + 1) * chunk_vecs + k;  // the value chunk of layer l
  const void* in = InPtr(p, b);
  char* out = static_cast<char*>(OutPtr(p, b));
  float x[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  uint32_t bad = 0;
  if (valid) {
    Load8(in, vec, p.bf16, x);
#pragma unroll
    for (int j = 0; j < 8; ++j) bad |= CheckInt4(x[j]);
  }
  float mn = x[0], mx = x[0];
#pragma unroll
  for (int j = 1; j < 8; ++j) {
    mn = MinF(mn, x[j]);
    mx = MaxF(mx, x[j]);
  }
  mn = WarpMin(mn, lanes);
  mx = WarpMax(mx, lanes);
  if (!valid) return;
  Flag(p, b, bad);
  if (bad) return;  // MakeInt4Params needs finite, in-range input; the payload is flagged
  const Int4Params prm = MakeInt4Params(mn, mx);
  if (k % lanes == 0) {
    const uint64_t gi = l * (s.chunk_elems() / p.lay.group) + k * 8 / p.lay.group;
    reinterpret_cast<uint16_t*>(out + p.lay.vscale_offset)[gi] = prm.scale_h;
    reinterpret_cast<uint16_t*>(out + p.lay.vmin_offset)[gi] = prm.min_h;
  }
  uint32_t w = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) w |= uint32_t{Int4Quant(x[j], prm.min_f, prm.inv)} << (4 * j);
  reinterpret_cast<uint32_t*>(out + p.lay.data_offset)[vec] = w;
}

// ---- INT4 keys (plane 0, or the MLA latent): grid (ceil(L * row/8 / kThreads), n) ----
__global__ void __launch_bounds__(kThreads) Int4KeyEncodeKernel(CodecParams p) {
  const uint32_t b = blockIdx.y;
  const BlockShape& s = p.shape;
  const uint64_t row_vecs = uint64_t{s.num_kv_heads} * s.head_dim / 8;
  const uint64_t t_id = uint64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (t_id >= uint64_t{s.num_layers} * row_vecs) return;
  const uint64_t l = t_id / row_vecs, cv = t_id % row_vecs;
  const uint64_t first = l * s.planes * s.block_size * row_vecs + cv;  // token 0's vector
  const void* in = InPtr(p, b);
  char* out = static_cast<char*>(OutPtr(p, b));
  if (t_id == 0) WriteHeader(p, out);
  float mn[8], mx[8];
  uint32_t bad = 0;
#pragma unroll 4
  for (uint32_t t = 0; t < s.block_size; ++t) {
    float x[8];
    Load8(in, first + t * row_vecs, p.bf16, x);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      bad |= CheckInt4(x[j]);
      mn[j] = t == 0 ? x[j] : MinF(mn[j], x[j]);
      mx[j] = t == 0 ? x[j] : MaxF(mx[j], x[j]);
    }
  }
  Flag(p, b, bad);
  if (bad) return;
  float min_f[8], inv[8];
  uint32_t sw[4] = {0, 0, 0, 0}, mw[4] = {0, 0, 0, 0};
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const Int4Params prm = MakeInt4Params(mn[j], mx[j]);
    min_f[j] = prm.min_f;
    inv[j] = prm.inv;
    sw[j / 2] |= uint32_t{prm.scale_h} << (16 * (j % 2));
    mw[j / 2] |= uint32_t{prm.min_h} << (16 * (j % 2));
  }
  const uint64_t pidx = l * row_vecs + cv;  // in units of 8 halves
  reinterpret_cast<uint4*>(out + p.lay.scale_offset)[pidx] = make_uint4(sw[0], sw[1], sw[2], sw[3]);
  reinterpret_cast<uint4*>(out + p.lay.kmin_offset)[pidx] = make_uint4(mw[0], mw[1], mw[2], mw[3]);
  uint32_t* nib = reinterpret_cast<uint32_t*>(out + p.lay.data_offset);
#pragma unroll 4
  for (uint32_t t = 0; t < s.block_size; ++t) {
    float x[8];
    Load8(in, first + t * row_vecs, p.bf16, x);
    uint32_t w = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j) w |= uint32_t{Int4Quant(x[j], min_f[j], inv[j])} << (4 * j);
    nib[first + t * row_vecs] = w;
  }
}

// ---- decode: grid (ceil(vecs / kThreads), n); desc = [payload_i.., block_i..] ----
__global__ void __launch_bounds__(kThreads) DecodeKernel(CodecParams p) {
  const uint32_t b = blockIdx.y;
  const BlockShape& s = p.shape;
  const uint64_t v = uint64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (v >= s.elems() / 8) return;
  const char* in = static_cast<const char*>(InPtr(p, b));
  void* out = OutPtr(p, b);
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
    desc[i] = reinterpret_cast<uint64_t>(a[i]);
    desc[a.size() + i] = reinterpret_cast<uint64_t>(b[i]);
    if (a[i] == nullptr || b[i] == nullptr || desc[i] % 16 || desc[a.size() + i] % 16)
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
  void* d_desc = nullptr;
  STRATA_KERNELS_RETURN_IF_ERROR(
      UploadDescriptors(host_desc_.data(), host_desc_.size() * 8, stream, &d_desc));
  CodecParams p{static_cast<const uint64_t*>(d_desc), d_flags, n, shape_,
                ComputeLossyLayout(codec_, shape_), codec_, shape_.dtype == KvDtype::kBFloat16};
  const uint64_t row_vecs = uint64_t{shape_.num_kv_heads} * shape_.head_dim / 8;
  switch (codec_) {
    case Codec::kFp8E4M3:
      Fp8EncodeKernel<<<dim3(static_cast<unsigned>(shape_.num_chunks()), n), kThreads, 0, stream>>>(p);
      break;
    case Codec::kInt8Group:
      Int8EncodeKernel<<<dim3(Blocks(shape_.elems() / 8), n), kThreads, 0, stream>>>(p);
      break;
    default:
      Int4KeyEncodeKernel<<<dim3(Blocks(shape_.num_layers * row_vecs), n), kThreads, 0, stream>>>(p);
      if (shape_.planes == 2)
        Int4ValueEncodeKernel<<<dim3(Blocks(shape_.num_layers * shape_.chunk_elems() / 8), n),
                                kThreads, 0, stream>>>(p);
      break;
  }
  KernelStatus launched = CudaError(cudaGetLastError(), "encode launch");
  KernelStatus freed = FreeDescriptors(d_desc, stream);
  if (!launched.ok()) return launched;
  return freed;
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
  void* d_desc = nullptr;
  STRATA_KERNELS_RETURN_IF_ERROR(
      UploadDescriptors(host_desc_.data(), host_desc_.size() * 8, stream, &d_desc));
  CodecParams p{static_cast<const uint64_t*>(d_desc), nullptr, n, shape_,
                ComputeLossyLayout(codec_, shape_), codec_, shape_.dtype == KvDtype::kBFloat16};
  DecodeKernel<<<dim3(Blocks(shape_.elems() / 8), n), kThreads, 0, stream>>>(p);
  KernelStatus launched = CudaError(cudaGetLastError(), "decode launch");
  KernelStatus freed = FreeDescriptors(d_desc, stream);
  if (!launched.ok()) return launched;
  return freed;
}

}  // namespace strata::kernels::cuda
