// Copy and checksum in one pass (block_format.h: CopyWithChecksum, ScatterWithChecksum).
//
// The bulk copies of KV bytes are each paired with an XXH3-64 of the bytes copied: the daemon
// copies a client's staging into the pool and publishes the checksum of what it copied, a client
// verifies the pool bytes it scatters into an engine's pages. Done as copy-then-hash per chunk, the
// destination is written with ordinary stores (each line first read from DRAM for ownership) and
// then read back by the hash. Here each 64-byte stripe is loaded once into AVX2 registers,
// written from those registers with non-temporal stores (no read for ownership, no cache
// pollution: the destination is not read again by this core) and accumulated into XXH3's state
// from the same registers, so the checksum is exactly of the bytes written, never of a second read
// of memory that another process could change in between.
//
// The accumulation reproduces libxxhash's XXH3_hashLong_64b with the default secret (seed 0) step
// for step (the same inline routines from xxhash.h); tests/core/checksum_copy_test.cc checks it
// against XXH3_64bits for every length class. Payloads of at most 240 bytes (XXH3's short-input
// paths) and CPUs without AVX2 take the plain copy followed by the dispatched hash.
//
// Thread-safety: pure functions.
#include <immintrin.h>  // before xxhash.h: its AVX2 routines use the intrinsic types

#define XXH_INLINE_ALL
#define XXH_DISPATCH_AVX2 1
#define XXH_TARGET_AVX2 __attribute__((__target__("avx2")))
#include <xxhash.h>

#include <cstring>

#include "checksum_copy.h"
#include "strata/block_format.h"

namespace strata {
namespace {

constexpr size_t kStripe = XXH_STRIPE_LEN;                                          // 64
constexpr size_t kStripesPerBlock = (XXH_SECRET_DEFAULT_SIZE - kStripe) / XXH_SECRET_CONSUME_RATE;
constexpr size_t kBlockLen = kStripe * kStripesPerBlock;                            // 1024
constexpr size_t kFusedMin = XXH3_MIDSIZE_MAX + 1;  // below: XXH3's short-input paths

enum class StoreKind { kStream32, kStream16, kUnaligned };

template <StoreKind kKind>
XXH_TARGET_AVX2 inline void StoreStripe(std::byte* dst, __m256i a, __m256i b) {
  if constexpr (kKind == StoreKind::kStream32) {
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst), a);
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + 32), b);
  } else if constexpr (kKind == StoreKind::kStream16) {
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst), _mm256_castsi256_si128(a));
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + 16), _mm256_extracti128_si256(a, 1));
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + 32), _mm256_castsi256_si128(b));
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + 48), _mm256_extracti128_si256(b, 1));
  } else {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), a);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 32), b);
  }
}

// How far ahead of the stripe being copied its source is prefetched: the hardware prefetcher
// alone left the fused loop at ~0.75 of memcpy (rep movsb) on AMD EPYC; 512 bytes ahead brought
// it to ~0.95, 2 KiB ahead was no better and worse when scattering.
constexpr size_t kPrefetchAhead = 512;

// The accumulation of one stripe already in registers (XXH3_accumulate_512_avx2).
XXH_TARGET_AVX2 inline void Accumulate(__m256i* acc, __m256i d0, __m256i d1,
                                       const xxh_u8* secret) {
  const __m256i data[2] = {d0, d1};
  for (int i = 0; i < 2; ++i) {
    const __m256i key = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(secret) + i);
    const __m256i data_key = _mm256_xor_si256(data[i], key);
    const __m256i data_key_lo = _mm256_shuffle_epi32(data_key, _MM_SHUFFLE(0, 3, 0, 1));
    const __m256i product = _mm256_mul_epu32(data_key, data_key_lo);
    const __m256i swapped = _mm256_shuffle_epi32(data[i], _MM_SHUFFLE(1, 0, 3, 2));
    acc[i] = _mm256_add_epi64(product, _mm256_add_epi64(acc[i], swapped));
  }
}

// One stripe: load, store to dst, accumulate (XXH3_accumulate_512_avx2 on the loaded registers).
template <StoreKind kKind>
XXH_TARGET_AVX2 inline void CopyStripe(__m256i* acc, std::byte* dst, const std::byte* src,
                                       const xxh_u8* secret) {
  // Past the source's end is harmless: a prefetch never faults (integer arithmetic: no pointer
  // past the object is formed).
  _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(src) + kPrefetchAhead),
               _MM_HINT_T0);
  const __m256i d0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
  const __m256i d1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 32));
  StoreStripe<kKind>(dst, d0, d1);
  Accumulate(acc, d0, d1, secret);
}

// The destination of source byte `at`: pieces of `piece` bytes each, piece i at dst[i].
struct Pieces {
  std::byte* const* dst;
  size_t piece;
  std::byte* At(size_t at) const { return dst[at / piece] + at % piece; }
};

// The destinations of consecutive stripes, piece after piece, with no division per stripe (a
// 64-bit division per 64-byte stripe cost as much as the copy: the fused loop ran at half of
// memcpy's speed). REQUIRES: every piece but the last is a multiple of kStripe long.
class StripeCursor {
 public:
  explicit StripeCursor(const Pieces& p)
      : next_(p.dst + 1), piece_(p.piece), cur_(p.dst[0]), end_(p.dst[0] + p.piece) {}
  std::byte* Take() {
    if (cur_ == end_) [[unlikely]] {
      cur_ = *next_++;
      end_ = cur_ + piece_;
    }
    std::byte* d = cur_;
    cur_ += kStripe;
    return d;
  }

 private:
  std::byte* const* next_;
  size_t piece_;
  std::byte* cur_;
  std::byte* end_;
};

// XXH3-64 of src[0, n) while copying it to `out`. REQUIRES: n >= kFusedMin; every piece but the
// last is a multiple of kStripe long (a stripe never straddles two pieces).
template <StoreKind kKind>
XXH_TARGET_AVX2 uint64_t FusedCopy(const std::byte* src, size_t n, const Pieces& out) {
  alignas(32) xxh_u64 acc64[XXH_ACC_NB] = XXH3_INIT_ACC;
  __m256i acc[2] = {_mm256_load_si256(reinterpret_cast<const __m256i*>(acc64)),
                    _mm256_load_si256(reinterpret_cast<const __m256i*>(acc64) + 1)};
  const xxh_u8* secret = XXH3_kSecret;
  const size_t nb_blocks = (n - 1) / kBlockLen;
  size_t at = 0;
  StripeCursor cursor(out);
  for (size_t b = 0; b < nb_blocks; ++b) {
    for (size_t s = 0; s < kStripesPerBlock; ++s, at += kStripe)
      CopyStripe<kKind>(acc, cursor.Take(), src + at, secret + s * XXH_SECRET_CONSUME_RATE);
    _mm256_store_si256(reinterpret_cast<__m256i*>(acc64), acc[0]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(acc64) + 1, acc[1]);
    XXH3_scrambleAcc_avx2(acc64, secret + XXH_SECRET_DEFAULT_SIZE - kStripe);
    acc[0] = _mm256_load_si256(reinterpret_cast<const __m256i*>(acc64));
    acc[1] = _mm256_load_si256(reinterpret_cast<const __m256i*>(acc64) + 1);
  }
  const size_t nb_stripes = ((n - 1) - kBlockLen * nb_blocks) / kStripe;
  for (size_t s = 0; s < nb_stripes; ++s, at += kStripe)
    CopyStripe<kKind>(acc, cursor.Take(), src + at, secret + s * XXH_SECRET_CONSUME_RATE);
  // The 1..64 bytes left: ordinary stores. The last stripe, [n - 64, n), is hashed from the
  // destination, which holds exactly the bytes copied (the stores above are this thread's own).
  {
    const size_t left = n - at;
    std::byte* d = out.At(at);
    std::memcpy(d, src + at, left);
  }
  _mm_sfence();
  alignas(64) std::byte last[kStripe];
  {
    // The last stripe may span the last two pieces' ends: assemble it from the destination.
    size_t from = n - kStripe, got = 0;
    while (got < kStripe) {
      const size_t in_piece = out.piece - (from % out.piece);
      const size_t take = std::min(kStripe - got, in_piece);
      std::memcpy(last + got, out.At(from), take);
      got += take;
      from += take;
    }
  }
  _mm256_store_si256(reinterpret_cast<__m256i*>(acc64), acc[0]);
  _mm256_store_si256(reinterpret_cast<__m256i*>(acc64) + 1, acc[1]);
  XXH3_accumulate_512_avx2(acc64, last,
                           secret + XXH_SECRET_DEFAULT_SIZE - kStripe - XXH_SECRET_LASTACC_START);
  return XXH3_mergeAccs(acc64, secret + XXH_SECRET_MERGEACCS_START,
                        static_cast<xxh_u64>(n) * XXH_PRIME64_1);
}

bool HasAvx2() {
  static const bool avx2 = __builtin_cpu_supports("avx2");
  return avx2;
}

// src[0, n) to `out` with non-temporal stores, unhashed. REQUIRES: as FusedCopy.
template <StoreKind kKind>
XXH_TARGET_AVX2 void StreamPieces(const std::byte* src, size_t n, const Pieces& out) {
  StripeCursor cursor(out);
  size_t at = 0;
  for (; at + kStripe <= n; at += kStripe) {
    _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(src + at) +
                                               kPrefetchAhead),
                 _MM_HINT_T0);
    const __m256i d0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + at));
    const __m256i d1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + at + 32));
    StoreStripe<kKind>(cursor.Take(), d0, d1);
  }
  if (at < n) std::memcpy(out.At(at), src + at, n - at);
  _mm_sfence();
}

void Stream(const std::byte* src, size_t n, const Pieces& out, uintptr_t dst_bits) {
  if ((dst_bits & 31) == 0) return StreamPieces<StoreKind::kStream32>(src, n, out);
  return StreamPieces<StoreKind::kStream16>(src, n, out);
}

uint64_t Fused(const std::byte* src, size_t n, const Pieces& out, uintptr_t dst_bits) {
  if ((dst_bits & 31) == 0) return FusedCopy<StoreKind::kStream32>(src, n, out);
  if ((dst_bits & 15) == 0) return FusedCopy<StoreKind::kStream16>(src, n, out);
  return FusedCopy<StoreKind::kUnaligned>(src, n, out);
}


}  // namespace

// XXH3_hashLong_64b over stripes that arrive a row at a time. With the payload's length n a
// multiple of 64 (T = n / 64 stripes), the reference loop accumulates stripes 0 .. T-2 with the
// secret at (k % 16) * 8, scrambles after every 16th of those, and accumulates stripe T-1 (the
// last 64 bytes) with the "last stripe" secret before merging: exactly what AppendRows does.
bool GatherWithChecksum::Fits(const std::byte* dst, uint64_t length) {
  return HasAvx2() && (reinterpret_cast<uintptr_t>(dst) & 31) == 0 && length % kStripe == 0 &&
         length >= kFusedMin;
}

GatherWithChecksum::GatherWithChecksum(std::byte* dst, uint64_t length)
    : dst_(dst), stripes_(length / kStripe) {
  const xxh_u64 init[XXH_ACC_NB] = XXH3_INIT_ACC;
  std::memcpy(acc_, init, sizeof(acc_));
}

XXH_TARGET_AVX2 void GatherWithChecksum::AppendRows(const std::byte* src, size_t rows,
                                                    size_t stride, size_t row_bytes) {
  const xxh_u8* secret = XXH3_kSecret;
  __m256i acc[2] = {_mm256_load_si256(reinterpret_cast<const __m256i*>(acc_)),
                    _mm256_load_si256(reinterpret_cast<const __m256i*>(acc_) + 1)};
  const size_t per_row = row_bytes / kStripe;
  for (size_t r = 0; r < rows; ++r, src += stride) {
    for (size_t s = 0; s < per_row; ++s, ++next_) {
      const std::byte* from = src + s * kStripe;
      std::byte* to = dst_ + next_ * kStripe;
      const __m256i d0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(from));
      const __m256i d1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(from + 32));
      _mm256_stream_si256(reinterpret_cast<__m256i*>(to), d0);
      _mm256_stream_si256(reinterpret_cast<__m256i*>(to + 32), d1);
      if (next_ + 1 < stripes_) [[likely]] {
        Accumulate(acc, d0, d1, secret + (next_ % kStripesPerBlock) * XXH_SECRET_CONSUME_RATE);
        if (next_ % kStripesPerBlock == kStripesPerBlock - 1) {
          _mm256_store_si256(reinterpret_cast<__m256i*>(acc_), acc[0]);
          _mm256_store_si256(reinterpret_cast<__m256i*>(acc_) + 1, acc[1]);
          XXH3_scrambleAcc_avx2(acc_, secret + XXH_SECRET_DEFAULT_SIZE - kStripe);
          acc[0] = _mm256_load_si256(reinterpret_cast<const __m256i*>(acc_));
          acc[1] = _mm256_load_si256(reinterpret_cast<const __m256i*>(acc_) + 1);
        }
        continue;
      }
      // The last stripe: its own secret, then the merge.
      Accumulate(acc, d0, d1, secret + XXH_SECRET_DEFAULT_SIZE - kStripe - XXH_SECRET_LASTACC_START);
      alignas(32) xxh_u64 out[XXH_ACC_NB];
      _mm256_store_si256(reinterpret_cast<__m256i*>(out), acc[0]);
      _mm256_store_si256(reinterpret_cast<__m256i*>(out) + 1, acc[1]);
      last_ = XXH3_mergeAccs(out, secret + XXH_SECRET_MERGEACCS_START,
                             static_cast<xxh_u64>(stripes_ * kStripe) * XXH_PRIME64_1);
    }
  }
  _mm256_store_si256(reinterpret_cast<__m256i*>(acc_), acc[0]);
  _mm256_store_si256(reinterpret_cast<__m256i*>(acc_) + 1, acc[1]);
}

uint64_t GatherWithChecksum::Finish() {
  _mm_sfence();
  return last_;
}

void StreamCopy(std::byte* dst, const std::byte* src, size_t n) {
  const uintptr_t bits = reinterpret_cast<uintptr_t>(dst);
  if (n < kFusedMin || !HasAvx2() || (bits & 15) != 0) {
    std::memcpy(dst, src, n);
    return;
  }
  std::byte* const pieces[1] = {dst};
  Stream(src, n, Pieces{pieces, n}, bits);
}

void StreamScatter(const std::byte* src, size_t n, size_t piece_bytes, std::byte* const* dst) {
  const size_t count = (n + piece_bytes - 1) / piece_bytes;
  uintptr_t bits = 0;
  for (size_t i = 0; i < count; ++i) bits |= reinterpret_cast<uintptr_t>(dst[i]);
  if (n < kFusedMin || !HasAvx2() || piece_bytes % kStripe != 0 || (bits & 15) != 0) {
    for (size_t i = 0; i < count; ++i)
      std::memcpy(dst[i], src + i * piece_bytes, std::min(piece_bytes, n - i * piece_bytes));
    return;
  }
  Stream(src, n, Pieces{dst, piece_bytes}, bits);
}

uint64_t CopyWithChecksum(std::byte* dst, const std::byte* src, size_t n) {
  if (n < kFusedMin || !HasAvx2()) {
    std::memcpy(dst, src, n);
    return PayloadChecksum({dst, n});
  }
  std::byte* const pieces[1] = {dst};
  return Fused(src, n, Pieces{pieces, n}, reinterpret_cast<uintptr_t>(dst));
}

uint64_t ScatterWithChecksum(const std::byte* src, size_t n, size_t piece_bytes,
                             std::byte* const* dst) {
  const size_t count = (n + piece_bytes - 1) / piece_bytes;
  if (n < kFusedMin || !HasAvx2() || piece_bytes % kStripe != 0) {
    for (size_t i = 0; i < count; ++i)
      std::memcpy(dst[i], src + i * piece_bytes, std::min(piece_bytes, n - i * piece_bytes));
    return PayloadChecksum({src, n});
  }
  uintptr_t bits = 0;
  for (size_t i = 0; i < count; ++i) bits |= reinterpret_cast<uintptr_t>(dst[i]);
  return Fused(src, n, Pieces{dst, piece_bytes}, bits);
}

}  // namespace strata
