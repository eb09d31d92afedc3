// DiskIndex: the disk tier's RocksDB index (DIR/index): one record per block,
// keyed by the 16-byte canonical BlockKey (the record's bytes: disk_record.h).
// RocksDB is included only in disk_index.cc. A damaged index never stops the
// tier from opening: RocksDB's repair first (it keeps what it can read;
// DiskTier re-checks every record, and every payload is verified when read),
// else the index is moved aside to "DIR/index.damaged-<UTC time>" and a new one
// starts empty. Errors that are not damage (permissions, I/O) still fail the
// open.
//
// Thread-safety: all methods are thread-safe. Writes are serialised by the
// index's own mutex (RocksDB is thread-safe, but its write-group hand-off
// synchronises through atomics that ThreadSanitizer cannot see in Debian's
// uninstrumented librocksdb; one writer at a time keeps the stress test's
// reports to real races). Ownership: the RocksDB handle; the destructor flushes
// the memtable (so the next open reads sorted tables instead of replaying the
// WAL) and closes it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "strata/block_format.h"
#include "strata/result.h"

namespace strata::store::disk {

class DiskIndex {
 public:
  // Called once per attempt to read the index, before its records, with
  // RocksDB's estimate of their number (a repair starts another attempt: forget
  // what the last one delivered).
  using BeginScan = std::function<void(uint64_t estimated_records)>;
  // Called for every record, in key order: its key bytes (any length: a damaged
  // record's key may not be 16 bytes) and value.
  using OnRecord =
      std::function<void(std::span<const std::byte> key, std::span<const std::byte> value)>;

  // Opens (or creates) the index at `dir` and reads every record into
  // `on_record`. When the index was damaged, *recovery says what was done
  // (repaired, or moved aside), else it is empty.
  static Result<std::unique_ptr<DiskIndex>> Open(const std::string& dir, const BeginScan& begin,
                                                 const OnRecord& on_record, std::string* recovery);
  ~DiskIndex();
  DiskIndex(const DiskIndex&) = delete;
  DiskIndex& operator=(const DiskIndex&) = delete;

  // Writes the record of `key`; with `sync`, the WAL is synced before it
  // returns.
  Status Put(const BlockKey& key, std::span<const std::byte> value, bool sync);
  // Deletes the record of `key` (its delete is in the WAL when this returns).
  Status Delete(const BlockKey& key);
  // Deletes records by their raw key bytes in one synced batch (bad records
  // found at open).
  Status DeleteRaw(const std::vector<std::string>& keys);
  // Syncs the WAL: every record written before the call is durable against
  // power loss.
  Status SyncWal();
  // Closes the index without flushing its memtable (nothing new is written to
  // the directory).
  void CloseWithoutFlush();

  // Reads every record of the index at `dir` without opening it for writing (RocksDB's
  // OpenForReadOnly: no LOCK file taken, nothing written, no recovery or repair), so it is safe
  // while a daemon has the index open, for `strata inspect --data-dir`. IOError when the index
  // cannot be opened or read.
  static Status ScanReadOnly(const std::string& dir, const OnRecord& on_record);

  // The RocksDB key of a block: its 16 canonical bytes.
  static std::string KeyBytes(const BlockKey& key);

 private:
  class Db;
  explicit DiskIndex(std::unique_ptr<Db> db);
  std::unique_ptr<Db> db_;
  std::mutex write_mu_;
};

}  // namespace strata::store::disk
