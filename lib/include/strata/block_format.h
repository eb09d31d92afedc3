// The block header that travels with every cached block through every tier and transfer
// (docs/keys.md, "Block format"). A block that fails verification is a miss, never data.
//
// Layout, 64 bytes, all integers little-endian:
//
//   offset size field
//   ------ ---- -----------------------------------------------------------
//        0    4 magic  "STBK" (0x53 0x54 0x42 0x4B)
//        4    2 format version (kBlockFormatVersion)
//        6    2 codec (strata::Codec)
//        8    8 payload length in bytes
//       16   16 block key, canonical form (block_key.h)
//       32   16 namespace id, canonical form
//       48    8 payload checksum: XXH3-64 (seed 0) of the payload bytes
//       56    8 header checksum: XXH3-64 (seed 0) of header bytes [0, 56)
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "strata/block_key.h"
#include "strata/namespace.h"
#include "strata/result.h"
#include "strata/status.h"

namespace strata {

inline constexpr size_t kBlockHeaderSize = 64;
// 2: block keys carry their namespace's tag (block_key.h, docs/keys.md "Namespace tag"); a block
// of version 1 is keyed without it and is never served (the disk tier drops it at open).
inline constexpr uint16_t kBlockFormatVersion = 2;
inline constexpr uint32_t kBlockMagic = 0x4B425453;  // "STBK" in little-endian byte order
// Upper bound on a payload we accept from a header; larger lengths are treated as corruption.
inline constexpr uint64_t kMaxBlockPayload = uint64_t{1} << 36;  // 64 GiB

struct BlockHeader {
  uint16_t version = kBlockFormatVersion;
  Codec codec = Codec::kNone;
  uint64_t payload_length = 0;
  BlockKey key;
  NamespaceId ns;
  uint64_t payload_checksum = 0;

  friend bool operator==(const BlockHeader&, const BlockHeader&) = default;
};

// XXH3-64 (seed 0) of `payload`: the checksum stored in BlockHeader::payload_checksum.
uint64_t PayloadChecksum(std::span<const std::byte> payload);

// Copies n bytes from src to dst and returns PayloadChecksum of the bytes written, in one pass:
// each 64-byte stripe is loaded once, stored with non-temporal stores (dst is not pulled into
// this core's cache) and hashed from the same registers (AVX2; plain copy then hash otherwise).
// REQUIRES: the ranges do not overlap.
uint64_t CopyWithChecksum(std::byte* dst, const std::byte* src, size_t n);

// As CopyWithChecksum for a destination in pieces: src[i * piece_bytes, (i + 1) * piece_bytes)
// goes to dst[i] (the last piece may be shorter); returns PayloadChecksum of src[0, n). One pass,
// non-temporal stores. REQUIRES: ceil(n / piece_bytes) pointers in dst; no range overlaps src.
uint64_t ScatterWithChecksum(const std::byte* src, size_t n, size_t piece_bytes,
                             std::byte* const* dst);

// PayloadChecksum computed piece by piece, for payloads that arrive in pieces (a disk read in
// flight): Update() with consecutive pieces, then Digest() equals PayloadChecksum of their
// concatenation. No allocation; the hash state lives in the object.
class PayloadChecksumStream {
 public:
  PayloadChecksumStream();
  void Update(std::span<const std::byte> piece);
  uint64_t Digest() const;

 private:
  alignas(64) unsigned char state_[640];  // XXH3_state_t (size checked in checksum.cc)
};

// A header for `payload`, with its length and checksum filled in.
BlockHeader MakeBlockHeader(const BlockKey& key, const NamespaceId& ns, Codec codec,
                            std::span<const std::byte> payload);

// Writes the 64-byte encoding of `header` (header checksum included).
void EncodeBlockHeader(const BlockHeader& header, std::span<std::byte, kBlockHeaderSize> out);

// Decodes the first 64 bytes of `in`. Corruption when `in` is shorter than a header, the magic or
// header checksum is wrong, the codec is unknown or the length is absurd; NotSupported for a
// version this build cannot read (older or newer: BlockHeaderVersion tells which).
Result<BlockHeader> DecodeBlockHeader(std::span<const std::byte> in);

// The format version field of a header whose magic and header checksum hold, else 0.
uint16_t BlockHeaderVersion(std::span<const std::byte> in);

// Corruption unless `payload` has the header's length and checksum.
Status VerifyPayload(const BlockHeader& header, std::span<const std::byte> payload);

}  // namespace strata
