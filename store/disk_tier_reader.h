// DiskTierReader: a read-only view of a disk tier's directory (disk_tier.h) for `strata inspect
// --data-dir`, usable while no daemon runs and safe while one does: the index is read through
// DiskIndex::ScanReadOnly (RocksDB's OpenForReadOnly: no LOCK file taken, nothing written, no
// recovery or repair), and payloads are read with plain pread. Records that fail the checks
// DiskTier::Open applies (a bad header, a key that does not match its header, an extent outside
// blocks.data) are counted, not returned.
//
// Thread-safety: after Open, const methods may be called from any thread. The records are a
// snapshot taken at Open.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "store/disk_compression.h"
#include "strata/block_format.h"
#include "strata/result.h"

namespace strata::store {

struct DiskRecord {
  BlockHeader header;  // payload_length and payload_checksum are of the raw payload
  std::optional<BlockKey> parent;
  uint64_t offset = 0;       // blocks.data offset
  // How the payload is stored: compressed or raw, its stored length, and the bytes reserved for
  // it in blocks.data (4 KiB multiple).
  DiskCompression compression = DiskCompression::kNone;
  uint32_t stored_bytes = 0;
  uint64_t reserved_bytes = 0;
};

class DiskTierReader {
 public:
  // Opens `<dir>/index` read-only and reads every record. NotFound when `dir` holds no index;
  // NotSupported when the removed BlobDB back-end wrote it (DiskTierBlobDbRemoved).
  static Result<std::unique_ptr<DiskTierReader>> Open(const std::string& dir);
  ~DiskTierReader();

  const std::vector<DiskRecord>& records() const { return records_; }
  // Index records that failed the checks (DiskTier::Open would drop them).
  uint64_t bad_records() const { return bad_records_; }
  // Bytes of blocks.data.
  uint64_t data_file_bytes() const { return data_file_bytes_; }
  // The record of `key`, or nullptr.
  const DiskRecord* Find(const BlockKey& key) const;
  // Reads the payload of `record` (decompressing a compressed one) and checks it against its
  // header's checksum: true when it matches, false when it does not or when the stored bytes do
  // not decompress (the daemon would drop the block), an error when it cannot be read.
  Result<bool> Verify(const DiskRecord& record) const;

 private:
  DiskTierReader() = default;
  std::string dir_;
  std::vector<DiskRecord> records_;
  uint64_t bad_records_ = 0;
  uint64_t data_file_bytes_ = 0;
  int fd_ = -1;
};

}  // namespace strata::store
