// The disk tier's RocksDB record, drawn field by field in disk_tier.h: the bytes that follow the
// 64-byte block header (offset 64: payload offset u64 LE; 72: reserved bytes u32 LE; 76: flags,
// then the trailer: parent key, tag, compression), encoded and decoded in one place.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "store/disk_compression.h"
#include "strata/block_format.h"

namespace strata::store::disk {

constexpr uint64_t kAlign = 4096;   // O_DIRECT and extent granularity of blocks.data
constexpr size_t kRecordSize = 77;  // without the optional parent key, tag and compression

// The flags byte of a record (offset 76), and what follows it.
constexpr uint8_t kHasParent = 1;   // a 16-byte parent key follows
constexpr uint8_t kHasTag = 2;      // then a tag: u16 LE length t, then t bytes (PutOptions::tag)
constexpr uint8_t kCompressed = 4;  // then u8 compression, u32 LE stored length

inline uint64_t RoundUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// Little-endian integers of n bytes.
void PutLe(std::byte* p, uint64_t v, int n);
uint64_t GetLe(const std::byte* p, int n);

// Bytes after the flags byte for a block with (or without) a parent, a tag of
// `tag` bytes and compression.
size_t TrailerBytes(bool has_parent, std::string_view tag, bool compressed = false);
// Writes the flags byte at p[0] and the parent, tag and compression after it.
// REQUIRES: p has 1 + TrailerBytes(...) bytes.
void EncodeTrailer(std::byte* p, const BlockKey* parent, std::string_view tag,
                   DiskCompression compression = DiskCompression::kNone, uint32_t stored = 0);
// Reads the flags byte at p[0] and what follows, within `avail` bytes from p.
// Returns the bytes taken (flags included), 0 when they do not fit or the flags
// are unknown. `compression` and `stored` are set for a compressed record (else
// kNone and 0); nullptr refuses compressed records (records of the removed
// BlobDB back-end, which had the flags at offset 64, never were).
size_t DecodeTrailer(const std::byte* p, size_t avail, bool* has_parent, BlockKey* parent,
                     std::string* tag, DiskCompression* compression = nullptr,
                     uint32_t* stored = nullptr);

}  // namespace strata::store::disk
