// DiskTier: the NVMe capacity tier (DESIGN.md "Tiers"). RocksDB holds the index and metadata; the
// payload lives in one slab file written and read with O_DIRECT (blocks.data). (A second payload
// back-end, RocksDB's BlobDB, measured 0.05-0.2x dd and was removed in issue 17; Open refuses a
// directory it wrote with NotSupported, naming the removal, and leaves its blocks as they are.)
//
// RocksDB record per block (key = the 16-byte canonical BlockKey):
//
//   offset size field
//   ------ ---- --------------------------------------------------------------
//        0   64 block header (strata/block_format.h), header checksum included; its
//               payload_length and payload_checksum are those of the raw payload
//       64    8 payload offset in blocks.data, little-endian, 4 KiB-aligned
//       72    4 bytes reserved on disk for the stored payload (4 KiB multiple), little-endian
//       76    1 flags: bit 0 a parent key follows, bit 1 a tag follows, bit 2 the payload is
//               stored compressed (other bits: 0)
//       77   16 parent key (canonical), when bit 0
//        …    2 tag length t (1..kMaxBlockTagBytes), little-endian, when bit 1
//        …    t the block's tag (PutOptions::tag, opaque), when bit 1
//        …    1 compression (DiskCompression: 1 lz4, 2 zstd), when bit 2
//        …    4 stored (compressed) bytes, little-endian, when bit 2; the raw length is the
//               header's
//
// Compression (DiskTierOptions::compression, docs/store.md "Compression on disk") is chosen per
// record: a payload whose compressed form would not take fewer 4 KiB pages than the raw one
// (incompressible bytes, or a block already stored with a lossless codec) is written raw, with
// bit 2 clear (byte for byte the layout of tiers without compression). Every record says how it
// is stored, so a directory written under one setting opens and reads under any other (mixed
// directories work); a record of a compression this build does not know is dropped at Open like
// any other bad record.
//
// Records without a tag are byte for byte what daemons before tags wrote; such a daemon drops a
// record with a tag as malformed (the block is a miss, never wrong data).
//
// Durability and crash safety: a Put writes the payload first (pwrite, O_DIRECT) and only then its
// index record, so the index never names bytes that were not written; space is reused only after
// the deleting record is in RocksDB's WAL. Every Get verifies the payload's XXH3-64 checksum
// against the header (after decompression, for a compressed record) and drops a block that fails
// or does not decompress (a miss, never data), so even a torn or lost write after power loss is
// never served. A Put is durable against process crashes when it
// returns; against power loss after Sync() returns (or at once with options.sync).
//
// Thread-safety: all methods are thread-safe. One mutex guards the in-memory index, the space
// allocator and the policy; payload I/O runs outside it. Ownership: the tier owns its directory's
// files while open; two DiskTiers must not share a directory (RocksDB's LOCK file refuses it).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <optional>
#include <utility>
#include <vector>

#include "store/disk_compression.h"
#include "store/eviction_policy.h"
#include "store/tier.h"

namespace strata::store {

struct DiskTierOptions {
  // Directory of the tier (created if missing). REQUIRES: non-empty.
  std::string path;
  // Payload bytes the tier may use; least valuable blocks are evicted beyond it. A disk that
  // fills up earlier makes Put return NoSpace. Default: 64 GiB.
  uint64_t capacity_bytes = uint64_t{64} << 30;
  // Eviction policy of this tier. Default: prefix.
  PolicyOptions policy;
  // Blocks the policy can track. Default: 0, meaning capacity_bytes / 64 KiB.
  uint32_t max_blocks = 0;
  // Make every Put durable against power loss before it returns (fdatasync + WAL sync). Default:
  // false: Put is durable against process crashes; call Sync() for power-loss durability.
  bool sync = false;
  // Growth step of blocks.data (fallocate, so a full disk shows at allocation, not mid-write).
  // Default: 64 MiB.
  uint64_t extend_bytes = uint64_t{64} << 20;
  // Use O_DIRECT for the slab file. Default: true. Tests on filesystems without O_DIRECT (tmpfs)
  // may turn it off.
  bool direct_io = true;
  // Longest pin a caller may ask for; longer TTLs are clamped. Default: 10 minutes.
  std::chrono::milliseconds max_pin_ttl = std::chrono::minutes(10);
  // Also verify each payload against its header checksum at Put (Get always verifies, so a bad
  // payload is never served either way; this only refuses to persist one). Costs one XXH3 pass
  // per write (~30% of a 2 MiB write on our machines). Default: false.
  bool verify_on_put = false;
  // Lossless compression of payloads in blocks.data. Costs CPU at Put and at Get (a decompression before the checksum) and saves disk
  // space and I/O as far as the bytes compress; capacity_bytes counts the stored (compressed)
  // bytes. Default: none.
  DiskCompressionOptions compression;
  // Called with the key of each block the tier evicts to make room, under the tier's lock: it
  // must not call back into the tier and must not block. Default: none.
  std::function<void(const BlockKey&)> on_evict;
};

struct DiskTierOpenInfo {
  uint64_t blocks_recovered = 0;
  uint64_t records_dropped = 0;  // index records that were corrupt or pointed outside the file
  // Records of an older block format (block_format.h: version 1 keys carry no namespace tag):
  // dropped with their index records, their extents freed; the owner logs the count.
  uint64_t old_format_dropped = 0;
  double seconds = 0;            // wall time of Open
  // Empty when the RocksDB index opened cleanly; else what was done about its damage (repaired
  // by RocksDB, or moved aside to "<path>/index.damaged-<UTC time>" and started empty), for the
  // owner to log.
  std::string index_recovery;
};

// The error for a directory written by the removed BlobDB payload back-end (issue 17): it names
// the removal and what to do. DiskTier::Open and DiskTierReader::Open return it.
Status DiskTierBlobDbRemoved(const std::string& path);

class DiskTier final : public Tier {
 public:
  // Opens (or creates) the tier at options.path and rebuilds the in-memory index from RocksDB.
  static Result<std::unique_ptr<DiskTier>> Open(const DiskTierOptions& options);
  ~DiskTier() override;

  TierKind kind() const override { return TierKind::kDisk; }
  Status Put(const BlockHeader& header, std::span<const std::byte> payload,
             const PutOptions& options = {}) override;
  Result<BlockHeader> Get(const BlockKey& key, std::span<std::byte> out) override;
  Result<BlockLocation> Find(const BlockKey& key) const override;
  Status Pin(const BlockKey& key, std::chrono::milliseconds ttl) override;
  Status Unpin(const BlockKey& key) override;
  Status Erase(const BlockKey& key) override;
  TierStats Stats() const override;

  // Makes every Put that returned before this call durable against power loss.
  Status Sync();
  // True when `key` has cached children in this tier (a shared prefix).
  bool HasChildren(const BlockKey& key) const;
  // Keys of the blocks cached now, of namespace `ns` (every namespace when nullopt).
  std::vector<BlockKey> Keys(const std::optional<NamespaceId>& ns) const;
  // Namespace of the cached block `key`, for statistics; no access is recorded. NotFound when it
  // is not cached.
  Result<NamespaceId> NamespaceOf(const BlockKey& key) const;
  const DiskTierOpenInfo& open_info() const;
  // The tags (PutOptions::tag) of the blocks Open found, once: the owner keeps them from then on
  // (TieredStore's BlockTags). Later calls return nothing.
  std::vector<std::pair<BlockKey, std::string>> TakeRecoveredTags();

  class Impl;

 private:
  explicit DiskTier(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace strata::store
