// CPU reference of the lossy codecs (codec.h). The per-element arithmetic is quant_math.h, shared
// with cuda/quant.cu; this file only walks the groups in the payload order codec.h draws, one
// (layer, plane) chunk at a time through a per-thread float buffer.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "convert_cpu.h"
#include "strata_kernels/codec.h"
#include "strata_kernels/quant_math.h"

namespace strata::kernels {
namespace {

// The block's elements as float, one (layer, plane) chunk at a time (bulk-converted: the scalar
// conversions of numeric.h dominate otherwise). Scratch is per thread, so the functions stay
// reentrant without allocating per call.
struct Chunks {
  const uint16_t* in;
  bool bf16;
  uint64_t chunk_elems;
  std::vector<float>& buf;
  const float* Load(uint64_t c) {
    internal::KvToFloat(bf16, in + c * chunk_elems, buf.data(), chunk_elems);
    return buf.data();
  }
};

std::vector<float>& Scratch(uint64_t n) {
  thread_local std::vector<float> buf;
  if (buf.size() < n) buf.resize(n);
  return buf;
}

KernelStatus NonFinite(uint64_t elem) {
  return KernelStatus::OutOfRange("element " + std::to_string(elem) +
                                  " is NaN or infinite: lossy codecs need finite KV");
}

// First non-finite element of x[0, n), or n.
uint64_t FindNonFinite(const float* x, uint64_t n) {
  uint32_t any = 0;
  for (uint64_t i = 0; i < n; ++i) any |= (FloatToBits(x[i]) & 0x7f800000u) == 0x7f800000u;
  if (!any) return n;
  for (uint64_t i = 0; i < n; ++i)
    if (!IsFiniteFloat(x[i])) return i;
  return n;
}

template <typename T>
T* At(std::span<std::byte> buf, uint64_t offset) {
  return reinterpret_cast<T*>(buf.data() + offset);
}
template <typename T>
const T* At(std::span<const std::byte> buf, uint64_t offset) {
  return reinterpret_cast<const T*>(buf.data() + offset);
}

float MaxAbs(const float* x, uint64_t n) {
  float m = 0.0f;
  for (uint64_t i = 0; i < n; ++i) m = MaxF(m, AbsF(x[i]));
  return m;
}

KernelStatus EncodeFp8(const BlockShape& s, const LossyLayout& lay, Chunks& in,
                       std::span<std::byte> out) {
  float* scales = At<float>(out, lay.scale_offset);
  uint8_t* q = At<uint8_t>(out, lay.data_offset);
  const uint64_t n = s.chunk_elems();
  for (uint64_t c = 0; c < s.num_chunks(); ++c) {
    const float* x = in.Load(c);
    const uint64_t bad = FindNonFinite(x, n);
    if (bad != n) return NonFinite(c * n + bad);
    const SymScale ss = MakeSymScale(MaxAbs(x, n), kE4m3Max);
    scales[c] = ss.scale;
    uint8_t* qc = q + c * n;
    for (uint64_t e = 0; e < n; ++e) qc[e] = Fp8Quant(x[e], ss.inv);
  }
  return KernelStatus::Ok();
}

KernelStatus EncodeInt8(const BlockShape& s, const LossyLayout& lay, Chunks& in,
                        std::span<std::byte> out) {
  float* scales = At<float>(out, lay.scale_offset);
  int8_t* q = At<int8_t>(out, lay.data_offset);
  const uint32_t g = lay.group;
  const uint64_t n = s.chunk_elems(), groups = n / g;
  for (uint64_t c = 0; c < s.num_chunks(); ++c) {
    const float* x = in.Load(c);
    const uint64_t bad = FindNonFinite(x, n);
    if (bad != n) return NonFinite(c * n + bad);
    for (uint64_t gi = 0; gi < groups; ++gi) {
      const float* xg = x + gi * g;
      const SymScale ss = MakeSymScale(MaxAbs(xg, g), 127.0f);
      scales[c * groups + gi] = ss.scale;
      int8_t* qg = q + c * n + gi * g;
      for (uint32_t e = 0; e < g; ++e) qg[e] = Int8Quant(xg[e], ss.inv);
    }
  }
  return KernelStatus::Ok();
}

KernelStatus CheckInt4Range(const float* x, uint64_t n, uint64_t first_elem) {
  const uint64_t bad = FindNonFinite(x, n);
  if (bad != n) return NonFinite(first_elem + bad);
  for (uint64_t i = 0; i < n; ++i)
    if (AbsF(x[i]) > kInt4MaxAbs)
      return KernelStatus::OutOfRange("element " + std::to_string(first_elem + i) +
                                      " exceeds 65504, the range of int4_kivi's fp16 scales");
  return KernelStatus::Ok();
}

inline void PutNibble(uint8_t* nib, uint64_t e, uint8_t q) {
  nib[e >> 1] |= static_cast<uint8_t>(q << ((e & 1) * 4));
}

KernelStatus EncodeInt4(const BlockShape& s, const LossyLayout& lay, Chunks& in,
                        std::span<std::byte> out) {
  uint16_t* kscale = At<uint16_t>(out, lay.scale_offset);
  uint16_t* kmin = At<uint16_t>(out, lay.kmin_offset);
  uint8_t* nib = At<uint8_t>(out, lay.data_offset);
  std::memset(nib, 0, (s.elems() + 1) / 2);
  const uint64_t row = uint64_t{s.num_kv_heads} * s.head_dim;
  const uint64_t n = s.chunk_elems();
  const uint32_t gv = lay.group;
  const uint64_t vgroups_per_layer = n / gv;
  std::vector<float> mn(row), mx(row);
  for (uint32_t l = 0; l < s.num_layers; ++l) {
    // Keys (or the MLA latent): one group per channel j, over the block's tokens.
    const uint64_t kc = uint64_t{l} * s.planes;
    const float* x = in.Load(kc);
    STRATA_KERNELS_RETURN_IF_ERROR(CheckInt4Range(x, n, kc * n));
    std::copy(x, x + row, mn.begin());
    std::copy(x, x + row, mx.begin());
    for (uint32_t t = 1; t < s.block_size; ++t)
      for (uint64_t j = 0; j < row; ++j) {
        mn[j] = MinF(mn[j], x[t * row + j]);
        mx[j] = MaxF(mx[j], x[t * row + j]);
      }
    for (uint64_t j = 0; j < row; ++j) {
      const Int4Params p = MakeInt4Params(mn[j], mx[j]);
      kscale[l * row + j] = p.scale_h;
      kmin[l * row + j] = p.min_h;
      mn[j] = p.min_f;  // reuse as the quantization parameters
      mx[j] = p.inv;
    }
    for (uint32_t t = 0; t < s.block_size; ++t)
      for (uint64_t j = 0; j < row; ++j)
        PutNibble(nib, kc * n + t * row + j, Int4Quant(x[t * row + j], mn[j], mx[j]));
    if (s.planes == 2) {  // values: per token, groups of Gv
      uint16_t* vscale = At<uint16_t>(out, lay.vscale_offset);
      uint16_t* vmin = At<uint16_t>(out, lay.vmin_offset);
      const uint64_t vc = kc + 1;
      const float* v = in.Load(vc);
      STRATA_KERNELS_RETURN_IF_ERROR(CheckInt4Range(v, n, vc * n));
      for (uint64_t gi = 0; gi < vgroups_per_layer; ++gi) {
        const float* xg = v + gi * gv;
        float gmn = xg[0], gmx = xg[0];
        for (uint32_t e = 1; e < gv; ++e) {
          gmn = MinF(gmn, xg[e]);
          gmx = MaxF(gmx, xg[e]);
        }
        const Int4Params p = MakeInt4Params(gmn, gmx);
        vscale[l * vgroups_per_layer + gi] = p.scale_h;
        vmin[l * vgroups_per_layer + gi] = p.min_h;
        for (uint32_t e = 0; e < gv; ++e)
          PutNibble(nib, vc * n + gi * gv + e, Int4Quant(xg[e], p.min_f, p.inv));
      }
    }
  }
  return KernelStatus::Ok();
}

// Decoders write float chunks and bulk-convert them to the block's dtype.
struct ChunkWriter {
  uint16_t* out;
  bool bf16;
  uint64_t chunk_elems;
  std::vector<float>& buf;
  float* Buf() { return buf.data(); }
  void Store(uint64_t c) { internal::FloatToKv(bf16, buf.data(), out + c * chunk_elems, chunk_elems); }
};

const float* E4m3Table() {
  static const auto* table = [] {
    auto* t = new float[256];
    for (int i = 0; i < 256; ++i) t[i] = E4m3ToFloat(static_cast<uint8_t>(i));
    return t;
  }();
  return table;
}

void DecodeFp8(const BlockShape& s, const LossyLayout& lay, std::span<const std::byte> in,
               ChunkWriter& w) {
  const float* scales = At<float>(in, lay.scale_offset);
  const uint8_t* q = At<uint8_t>(in, lay.data_offset);
  const float* table = E4m3Table();  // == E4m3ToFloat, so Fp8Dequant's exact value
  const uint64_t n = s.chunk_elems();
  for (uint64_t c = 0; c < s.num_chunks(); ++c) {
    float* x = w.Buf();
    const uint8_t* qc = q + c * n;
    const float scale = scales[c];
    for (uint64_t e = 0; e < n; ++e) x[e] = table[qc[e]] * scale;
    w.Store(c);
  }
}

void DecodeInt8(const BlockShape& s, const LossyLayout& lay, std::span<const std::byte> in,
                ChunkWriter& w) {
  const float* scales = At<float>(in, lay.scale_offset);
  const int8_t* q = At<int8_t>(in, lay.data_offset);
  const uint32_t g = lay.group;
  const uint64_t n = s.chunk_elems(), groups = n / g;
  for (uint64_t c = 0; c < s.num_chunks(); ++c) {
    float* x = w.Buf();
    for (uint64_t gi = 0; gi < groups; ++gi) {
      const float scale = scales[c * groups + gi];
      const int8_t* qg = q + c * n + gi * g;
      float* xg = x + gi * g;
      for (uint32_t e = 0; e < g; ++e) xg[e] = Int8Dequant(qg[e], scale);
    }
    w.Store(c);
  }
}

inline uint8_t GetNibble(const uint8_t* nib, uint64_t e) {
  return (nib[e >> 1] >> ((e & 1) * 4)) & 0xf;
}

void DecodeInt4(const BlockShape& s, const LossyLayout& lay, std::span<const std::byte> in,
                ChunkWriter& w) {
  const uint16_t* kscale = At<uint16_t>(in, lay.scale_offset);
  const uint16_t* kmin = At<uint16_t>(in, lay.kmin_offset);
  const uint8_t* nib = At<uint8_t>(in, lay.data_offset);
  const uint64_t row = uint64_t{s.num_kv_heads} * s.head_dim;
  const uint64_t n = s.chunk_elems();
  const uint32_t gv = lay.group;
  const uint64_t vgroups_per_layer = n / gv;
  std::vector<float> min_f(row), scale_f(row);
  for (uint32_t l = 0; l < s.num_layers; ++l) {
    const uint64_t kc = uint64_t{l} * s.planes;
    for (uint64_t j = 0; j < row; ++j) {
      const Int4Params p = Int4ParamsFromStored(kmin[l * row + j], kscale[l * row + j]);
      min_f[j] = p.min_f;
      scale_f[j] = p.scale_f;
    }
    float* x = w.Buf();
    for (uint32_t t = 0; t < s.block_size; ++t)
      for (uint64_t j = 0; j < row; ++j)
        x[t * row + j] = Int4Dequant(GetNibble(nib, kc * n + t * row + j), min_f[j], scale_f[j]);
    w.Store(kc);
    if (s.planes == 2) {
      const uint16_t* vscale = At<uint16_t>(in, lay.vscale_offset);
      const uint16_t* vmin = At<uint16_t>(in, lay.vmin_offset);
      const uint64_t vc = kc + 1;
      for (uint64_t gi = 0; gi < vgroups_per_layer; ++gi) {
        const uint64_t pi = l * vgroups_per_layer + gi;
        const Int4Params p = Int4ParamsFromStored(vmin[pi], vscale[pi]);
        for (uint32_t e = 0; e < gv; ++e)
          x[gi * gv + e] = Int4Dequant(GetNibble(nib, vc * n + gi * gv + e), p.min_f, p.scale_f);
      }
      w.Store(vc);
    }
  }
}

}  // namespace

KernelStatus CheckLossyShape(Codec codec, const BlockShape& shape) {
  if (!IsLossyCodec(codec))
    return KernelStatus::InvalidArgument("codec " + std::string(CodecName(codec)) +
                                         " is not a lossy codec");
  STRATA_KERNELS_RETURN_IF_ERROR(ValidateBlockShape(shape));
  if (shape.dtype != KvDtype::kFloat16 && shape.dtype != KvDtype::kBFloat16)
    return KernelStatus::NotSupported(std::string(CodecName(codec)) +
                                      " quantizes fp16 or bf16 KV, not " +
                                      std::string(KvDtypeName(shape.dtype)));
  return KernelStatus::Ok();
}

uint64_t LossyEncodedBytes(Codec codec, const BlockShape& shape) {
  if (!CheckLossyShape(codec, shape).ok()) return 0;
  return ComputeLossyLayout(codec, shape).total_bytes;
}

KernelStatus QuantizeBlockCpu(Codec codec, const BlockShape& shape,
                              std::span<const std::byte> block, std::span<std::byte> out) {
  STRATA_KERNELS_RETURN_IF_ERROR(CheckLossyShape(codec, shape));
  if (block.size() != shape.bytes())
    return KernelStatus::InvalidArgument("block of " + std::to_string(block.size()) +
                                         " bytes, the shape needs " + std::to_string(shape.bytes()));
  const LossyLayout lay = ComputeLossyLayout(codec, shape);
  if (out.size() < lay.total_bytes)
    return KernelStatus::NoSpace("output of " + std::to_string(out.size()) + " bytes, " +
                                 std::string(CodecName(codec)) + " needs " +
                                 std::to_string(lay.total_bytes));
  if (reinterpret_cast<uintptr_t>(block.data()) % 2 != 0 ||
      reinterpret_cast<uintptr_t>(out.data()) % 4 != 0)
    return KernelStatus::InvalidArgument("block must be 2-byte and output 4-byte aligned");
  // Section padding is zeroed so that equal blocks give equal payload bytes.
  std::memset(out.data(), 0, lay.data_offset);
  PayloadHeader h;
  h.codec = static_cast<uint16_t>(codec);
  h.dtype = static_cast<uint8_t>(shape.dtype);
  h.planes = static_cast<uint8_t>(shape.planes);
  h.raw_bytes = static_cast<uint32_t>(shape.bytes());
  h.body_bytes = static_cast<uint32_t>(lay.total_bytes - kPayloadHeaderBytes);
  WritePayloadHeader(h, out.data());
  Chunks in{reinterpret_cast<const uint16_t*>(block.data()), shape.dtype == KvDtype::kBFloat16,
            shape.chunk_elems(), Scratch(shape.chunk_elems())};
  switch (codec) {
    case Codec::kFp8E4M3: return EncodeFp8(shape, lay, in, out);
    case Codec::kInt8Group: return EncodeInt8(shape, lay, in, out);
    case Codec::kInt4Kivi: return EncodeInt4(shape, lay, in, out);
    default: return KernelStatus::InvalidArgument("not a lossy codec");
  }
}

KernelStatus DequantizeBlockCpu(Codec codec, const BlockShape& shape,
                                std::span<const std::byte> payload, std::span<std::byte> block) {
  STRATA_KERNELS_RETURN_IF_ERROR(CheckLossyShape(codec, shape));
  if (block.size() != shape.bytes())
    return KernelStatus::InvalidArgument("block of " + std::to_string(block.size()) +
                                         " bytes, the shape needs " + std::to_string(shape.bytes()));
  PayloadHeader h;
  STRATA_KERNELS_RETURN_IF_ERROR(ReadPayloadHeader(payload, codec, shape, &h));
  const LossyLayout lay = ComputeLossyLayout(codec, shape);
  if (uint64_t{h.body_bytes} + kPayloadHeaderBytes != lay.total_bytes)
    return KernelStatus::Corruption("payload: body of " + std::to_string(h.body_bytes) +
                                    " bytes, " + std::string(CodecName(codec)) + " needs " +
                                    std::to_string(lay.total_bytes - kPayloadHeaderBytes));
  if (reinterpret_cast<uintptr_t>(block.data()) % 2 != 0 ||
      reinterpret_cast<uintptr_t>(payload.data()) % 4 != 0)
    return KernelStatus::InvalidArgument("block must be 2-byte and payload 4-byte aligned");
  ChunkWriter w{reinterpret_cast<uint16_t*>(block.data()), shape.dtype == KvDtype::kBFloat16,
                shape.chunk_elems(), Scratch(shape.chunk_elems())};
  switch (codec) {
    case Codec::kFp8E4M3: DecodeFp8(shape, lay, payload, w); break;
    case Codec::kInt8Group: DecodeInt8(shape, lay, payload, w); break;
    case Codec::kInt4Kivi: DecodeInt4(shape, lay, payload, w); break;
    default: return KernelStatus::InvalidArgument("not a lossy codec");
  }
  return KernelStatus::Ok();
}

}  // namespace strata::kernels
