#include "store/disk_index.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <ctime>
#include <filesystem>

namespace strata::store::disk {
namespace {

Status FromRocks(const rocksdb::Status& s, const char* what) {
  if (s.ok()) return Status::OK();
  std::string msg = std::string(what) + ": " + s.ToString();
  if (s.IsNoSpace() || s.subcode() == rocksdb::Status::kNoSpace) return Status::NoSpace(msg);
  if (s.IsCorruption()) return Status::Corruption(msg);
  if (s.IsNotFound()) return Status::NotFound(msg);
  return Status::IOError(msg);
}

rocksdb::Options IndexOptions() {
  rocksdb::Options opts;
  opts.create_if_missing = true;
  opts.compression = rocksdb::kNoCompression;
  opts.max_background_jobs = 2;
  opts.write_buffer_size = 16 << 20;
  return opts;
}

std::span<const std::byte> Bytes(const rocksdb::Slice& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

}  // namespace

class DiskIndex::Db {
 public:
  std::unique_ptr<rocksdb::DB> db;
};

std::string DiskIndex::KeyBytes(const BlockKey& key) {
  auto b = key.ToBytes();
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

DiskIndex::DiskIndex(std::unique_ptr<Db> db) : db_(std::move(db)) {}

DiskIndex::~DiskIndex() {
  if (db_->db) {
    // Flush the memtable so that the next Open reads sorted tables instead of
    // replaying the WAL (a clean close reopens fast; after a crash the WAL is
    // replayed, bounded by write_buffer_size).
    (void)db_->db->Flush(rocksdb::FlushOptions());
    (void)db_->db->FlushWAL(true);
    (void)db_->db->Close();
  }
}

void DiskIndex::CloseWithoutFlush() {
  if (!db_->db) return;
  (void)db_->db->Close();
  db_->db.reset();
}

Status DiskIndex::ScanReadOnly(const std::string& dir, const OnRecord& on_record) {
  rocksdb::Options opts;
  rocksdb::DB* raw = nullptr;
  Status st = FromRocks(rocksdb::DB::OpenForReadOnly(opts, dir, &raw), "open RocksDB index read-only");
  if (!st.ok()) return Status::IOError(st.message());
  std::unique_ptr<rocksdb::DB> db(raw);
  rocksdb::ReadOptions scan;
  scan.fill_cache = false;
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(scan));
  for (it->SeekToFirst(); it->Valid(); it->Next()) on_record(Bytes(it->key()), Bytes(it->value()));
  st = FromRocks(it->status(), "scan RocksDB index");
  return st.ok() ? st : Status::IOError(st.message());
}

Result<std::unique_ptr<DiskIndex>> DiskIndex::Open(const std::string& index_dir,
                                                   const BeginScan& begin,
                                                   const OnRecord& on_record,
                                                   std::string* recovery) {
  recovery->clear();
  const rocksdb::Options opts = IndexOptions();
  auto db = std::make_unique<Db>();
  // Opens RocksDB at index_dir and reads every record; on failure the database
  // is closed.
  auto load_index = [&]() -> Status {
    rocksdb::DB* raw = nullptr;
    Status st = FromRocks(rocksdb::DB::Open(opts, index_dir, &raw), "open RocksDB index");
    if (!st.ok()) return st;
    db->db.reset(raw);
    uint64_t estimate = 0;
    if (!db->db->GetIntProperty("rocksdb.estimate-num-keys", &estimate)) estimate = 0;
    begin(estimate);
    rocksdb::ReadOptions scan;
    scan.fill_cache = false;
    scan.readahead_size = 4 << 20;
    std::unique_ptr<rocksdb::Iterator> it(db->db->NewIterator(scan));
    for (it->SeekToFirst(); it->Valid(); it->Next())
      on_record(Bytes(it->key()), Bytes(it->value()));
    st = FromRocks(it->status(), "scan RocksDB index");
    it.reset();
    if (!st.ok()) {
      (void)db->db->Close();
      db->db.reset();
    }
    return st;
  };
  Status st = load_index();
  if (!st.ok() && (st.IsCorruption() || st.IsNotFound())) {
    const std::string damage = st.ToString();
    Status repaired = FromRocks(rocksdb::RepairDB(index_dir, opts), "repair RocksDB index");
    if (repaired.ok()) st = load_index();
    if (repaired.ok() && st.ok()) {
      *recovery = "index at '" + index_dir + "' was damaged (" + damage +
                  "); repaired by RocksDB, every record re-checked";
    } else {
      char stamp[32];
      const std::time_t now = std::time(nullptr);
      std::tm tm{};
      ::gmtime_r(&now, &tm);
      std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
      const std::string aside = index_dir + ".damaged-" + stamp;
      std::error_code ec;
      std::filesystem::rename(index_dir, aside, ec);
      if (ec)
        return Status::IOError("disk tier: index at '" + index_dir + "' is damaged (" + damage +
                               ") and cannot be moved aside: " + ec.message());
      STRATA_RETURN_IF_ERROR(load_index().WithContext("a new index after moving the damaged one"));
      *recovery = "index at '" + index_dir + "' was damaged (" + damage +
                  ") and could not be repaired (" +
                  (repaired.ok() ? st.ToString() : repaired.ToString()) + "); moved to '" + aside +
                  "', starting empty";
    }
  } else if (!st.ok()) {
    return st;
  }
  return std::unique_ptr<DiskIndex>(new DiskIndex(std::move(db)));
}

Status DiskIndex::Put(const BlockKey& key, std::span<const std::byte> value, bool sync) {
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  std::lock_guard lock(write_mu_);
  return FromRocks(
      db_->db->Put(wo, KeyBytes(key),
                   rocksdb::Slice(reinterpret_cast<const char*>(value.data()), value.size())),
      "write index record");
}

Status DiskIndex::Delete(const BlockKey& key) {
  std::lock_guard lock(write_mu_);
  return FromRocks(db_->db->Delete(rocksdb::WriteOptions(), KeyBytes(key)), "delete");
}

Status DiskIndex::DeleteRaw(const std::vector<std::string>& keys) {
  rocksdb::WriteBatch batch;
  for (const auto& k : keys) batch.Delete(k);
  rocksdb::WriteOptions wo;
  wo.sync = true;
  std::lock_guard lock(write_mu_);
  return FromRocks(db_->db->Write(wo, &batch), "delete bad index records");
}

Status DiskIndex::SyncWal() { return FromRocks(db_->db->FlushWAL(/*sync=*/true), "sync WAL"); }

}  // namespace strata::store::disk
