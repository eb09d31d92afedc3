// DiskTier: round trips in both payload stores, restart recovery, corrupted payloads and index
// records, eviction at capacity, bad input.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include <rocksdb/db.h>
#include <rocksdb/options.h>

#include "store/disk_tier.h"
#include "store/disk_tier_reader.h"
#include "store_test_util.h"

namespace strata::store {
namespace {

using testing::IsTestPayload;
using testing::TempDir;
using testing::TestHeader;
using testing::TestKey;
using testing::TestPayload;

constexpr uint64_t kMiB = 1 << 20;

DiskTierOptions Opts(const std::string& path, uint64_t capacity = 256 * kMiB) {
  DiskTierOptions o;
  o.path = path;
  o.capacity_bytes = capacity;
  o.extend_bytes = 4 * kMiB;
  return o;
}

std::unique_ptr<DiskTier> OpenDisk(const DiskTierOptions& o) {
  auto t = DiskTier::Open(o);
  INFO(t.status().ToString());
  REQUIRE(t.ok());
  return std::move(t).value();
}

Status PutTest(DiskTier& t, uint64_t i, size_t size, const BlockKey* parent = nullptr) {
  const BlockKey k = TestKey(i);
  const auto p = TestPayload(k, size);
  PutOptions po;
  po.parent = parent;
  return t.Put(TestHeader(k, p), p, po);
}

size_t SizeOf(uint64_t i) { return 1000 + (i * 7919) % 70000; }

TEST_CASE("disk tier round-trips blocks and survives a restart", "[store]") {
  TempDir dir;
  const int n = 300;
  {
    auto t = OpenDisk(Opts(dir.path()));
    for (int i = 0; i < n; ++i) {
      const BlockKey parent = TestKey(i - 1);
      REQUIRE(PutTest(*t, i, SizeOf(i), i % 10 ? &parent : nullptr).ok());
    }
    REQUIRE(t->HasChildren(TestKey(0)));
    REQUIRE(t->Erase(TestKey(5)).ok());
    REQUIRE(t->Erase(TestKey(5)).IsNotFound());
    REQUIRE(t->Sync().ok());
  }
  auto t = OpenDisk(Opts(dir.path()));
  REQUIRE(t->open_info().blocks_recovered == n - 1);
  REQUIRE(t->open_info().records_dropped == 0);
  REQUIRE(t->HasChildren(TestKey(0)));  // parent links survive the restart
  std::vector<std::byte> out(80000);
  for (int i = 0; i < n; ++i) {
    auto h = t->Get(TestKey(i), out);
    if (i == 5) {
      REQUIRE(h.status().IsNotFound());
      continue;
    }
    REQUIRE(h.ok());
    REQUIRE(h->payload_length == SizeOf(i));
    REQUIRE(IsTestPayload(TestKey(i), out.data(), SizeOf(i)));
  }
  // Unaligned, exactly-sized output buffers work too (bounce buffer for O_DIRECT).
  std::vector<std::byte> exact(SizeOf(7) + 1);
  auto h = t->Get(TestKey(7), std::span<std::byte>(exact).subspan(1));
  REQUIRE(h.ok());
  REQUIRE(IsTestPayload(TestKey(7), exact.data() + 1, SizeOf(7)));
}

TEST_CASE("disk tier detects a corrupted payload, drops it and serves a miss", "[store]") {
  TempDir dir;
  uint64_t offset;
  {
    auto t = OpenDisk(Opts(dir.path()));
    for (int i = 0; i < 10; ++i) REQUIRE(PutTest(*t, i, 50000).ok());
    offset = t->Find(TestKey(3))->offset;
  }
  // Flip a byte of block 3's payload behind the tier's back (bit rot, a torn write).
  const std::string data = dir.path() + "/blocks.data";
  int fd = ::open(data.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  std::byte b;
  REQUIRE(pread(fd, &b, 1, static_cast<off_t>(offset + 777)) == 1);
  b ^= std::byte{0x40};
  REQUIRE(pwrite(fd, &b, 1, static_cast<off_t>(offset + 777)) == 1);
  close(fd);

  auto t = OpenDisk(Opts(dir.path()));
  std::vector<std::byte> out(50000);
  auto h = t->Get(TestKey(3), out);
  REQUIRE(h.status().IsCorruption());
  REQUIRE(t->Get(TestKey(3), out).status().IsNotFound());  // dropped
  REQUIRE(t->Stats().corrupt_dropped == 1);
  for (int i = 0; i < 10; ++i) {
    if (i == 3) continue;
    REQUIRE(t->Get(TestKey(i), out).ok());
    REQUIRE(IsTestPayload(TestKey(i), out.data(), 50000));
  }
  // The drop is durable: after another restart the block is still gone, the rest still there.
  t.reset();
  t = OpenDisk(Opts(dir.path()));
  REQUIRE(t->open_info().blocks_recovered == 9);
}

// Reads go out as 512 KiB pieces kept in flight (Linux AIO) and are hashed as they land: sizes
// around the piece and page boundaries, aligned and unaligned buffers (bounce path), and a flipped
// byte in the last piece of a multi-piece block are all exercised.
TEST_CASE("disk tier reads multi-piece blocks in flight and verifies every piece", "[store]") {
  TempDir dir;
  const size_t sizes[] = {1,          4095,           4096,          512 * 1024 - 1, 512 * 1024,
                          512 * 1024 + 1, 2 * kMiB,   2 * kMiB + 12345, 5 * kMiB + 7};
  uint64_t corrupt_offset = 0;
  {
    auto t = OpenDisk(Opts(dir.path()));
    for (size_t i = 0; i < std::size(sizes); ++i) REQUIRE(PutTest(*t, 100 + i, sizes[i]).ok());
    for (size_t i = 0; i < std::size(sizes); ++i) {
      INFO("size " << sizes[i]);
      // Page-aligned buffer with room for the padded extent (read in place) and a buffer that is
      // neither aligned nor padded (read through the bounce buffer).
      void* mem = std::aligned_alloc(4096, 6 * kMiB);
      REQUIRE(mem != nullptr);
      std::span<std::byte> aligned(static_cast<std::byte*>(mem), 6 * kMiB);
      std::vector<std::byte> unaligned(sizes[i] + 1);
      auto h = t->Get(TestKey(100 + i), aligned);
      REQUIRE(h.ok());
      REQUIRE(h->payload_length == sizes[i]);
      REQUIRE(IsTestPayload(TestKey(100 + i), aligned.data(), sizes[i]));
      h = t->Get(TestKey(100 + i), std::span(unaligned).subspan(1));
      REQUIRE(h.ok());
      REQUIRE(IsTestPayload(TestKey(100 + i), unaligned.data() + 1, sizes[i]));
      std::free(mem);
    }
    corrupt_offset = t->Find(TestKey(100 + 8))->offset + 5 * kMiB;  // in the 11th piece
  }
  const std::string data = dir.path() + "/blocks.data";
  int fd = ::open(data.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  std::byte b;
  REQUIRE(pread(fd, &b, 1, static_cast<off_t>(corrupt_offset)) == 1);
  b ^= std::byte{0x01};
  REQUIRE(pwrite(fd, &b, 1, static_cast<off_t>(corrupt_offset)) == 1);
  close(fd);
  auto t = OpenDisk(Opts(dir.path()));
  std::vector<std::byte> out(6 * kMiB);
  REQUIRE(t->Get(TestKey(108), out).status().IsCorruption());
  REQUIRE(t->Get(TestKey(107), out).ok());
  REQUIRE(IsTestPayload(TestKey(107), out.data(), sizes[7]));
}

TEST_CASE("disk tier refuses index records that point outside its file", "[store]") {
  TempDir dir;
  {
    auto t = OpenDisk(Opts(dir.path()));
    for (int i = 0; i < 20; ++i) REQUIRE(PutTest(*t, i, 40000).ok());
  }
  // Truncate the payload file: records of the cut blocks now point past its end.
  std::filesystem::resize_file(dir.path() + "/blocks.data", 10 * 40960);
  auto t = OpenDisk(Opts(dir.path()));
  REQUIRE(t->open_info().records_dropped > 0);
  REQUIRE(t->open_info().blocks_recovered + t->open_info().records_dropped == 20);
  std::vector<std::byte> out(40000);
  for (int i = 0; i < 20; ++i) {
    auto h = t->Get(TestKey(i), out);
    if (h.ok()) REQUIRE(IsTestPayload(TestKey(i), out.data(), 40000));
  }
}

TEST_CASE("disk tier evicts at capacity, keeps pinned blocks, reuses space", "[store]") {
  TempDir dir;
  auto t = OpenDisk(Opts(dir.path(), 4 * kMiB));
  REQUIRE(PutTest(*t, 0, 65536).ok());
  REQUIRE(t->Pin(TestKey(0), std::chrono::seconds(60)).ok());
  for (int i = 1; i < 300; ++i) REQUIRE(PutTest(*t, i, 65536).ok());
  const auto st = t->Stats();
  REQUIRE(st.payload_bytes <= 4 * kMiB);
  REQUIRE(st.evictions >= 230);
  REQUIRE(t->Find(TestKey(0)).ok());
  REQUIRE(t->Erase(TestKey(0)).code() == StatusCode::kUnavailable);
  REQUIRE(t->Unpin(TestKey(0)).ok());
  REQUIRE(t->Erase(TestKey(0)).ok());
  // The file never grew past the capacity: freed extents were reused.
  REQUIRE(std::filesystem::file_size(dir.path() + "/blocks.data") <= 4 * kMiB);
  std::vector<std::byte> out(65536);
  for (int i = 280; i < 300; ++i) REQUIRE(t->Get(TestKey(i), out).ok());
}

TEST_CASE("disk tier rejects bad input with a clear status", "[store]") {
  TempDir dir;
  DiskTierOptions o = Opts(dir.path());
  o.path = "";
  REQUIRE(DiskTier::Open(o).status().IsInvalidArgument());
  o = Opts(dir.path());
  o.extend_bytes = 1000;
  REQUIRE(DiskTier::Open(o).status().IsInvalidArgument());
  auto t = OpenDisk(Opts(dir.path()));
  const BlockKey k = TestKey(1);
  auto p = TestPayload(k, 5000);
  const BlockHeader h = TestHeader(k, p);
  REQUIRE(t->Put(h, std::span<const std::byte>(p).first(10)).IsInvalidArgument());
  p[0] ^= std::byte{1};
  {
    // verify_on_put refuses to persist a payload that does not match its header ...
    TempDir other;
    DiskTierOptions vo = Opts(other.path());
    vo.verify_on_put = true;
    auto v = OpenDisk(vo);
    REQUIRE(v->Put(h, p).IsCorruption());
  }
  // ... and without it, the bad payload is stored but never served: Get verifies.
  REQUIRE(t->Put(h, p).ok());
  std::vector<std::byte> buf(5000);
  REQUIRE(t->Get(k, buf).status().IsCorruption());
  p[0] ^= std::byte{1};
  REQUIRE(t->Put(h, p).ok());
  std::vector<std::byte> small(10);
  REQUIRE(t->Get(k, small).status().IsInvalidArgument());
  // A second tier on the same directory is refused (RocksDB's lock), not corrupted.
  REQUIRE_FALSE(DiskTier::Open(Opts(dir.path())).ok());
}

// A directory of the removed BlobDB back-end, written here with RocksDB as that back-end wrote
// it: each record is the 64-byte header, a flags byte (0: no parent, no tag) and the payload.
// `blob_files` puts the values in blob files (the back-end's options, then a flush); without
// it they stay in the WAL and tables (a tier that crashed before its first flush).
void WriteBlobDbTier(const std::string& dir, int blocks, bool blob_files) {
  std::filesystem::create_directories(dir);
  rocksdb::Options o;
  o.create_if_missing = true;
  if (blob_files) {
    o.enable_blob_files = true;
    o.min_blob_size = 0;
  }
  rocksdb::DB* raw = nullptr;
  REQUIRE(rocksdb::DB::Open(o, dir + "/index", &raw).ok());
  std::unique_ptr<rocksdb::DB> db(raw);
  for (int i = 0; i < blocks; ++i) {
    const BlockKey k = TestKey(i);
    const auto p = TestPayload(k, 5000);
    std::string value(kBlockHeaderSize + 1 + p.size(), '\0');
    EncodeBlockHeader(TestHeader(k, p), std::span<std::byte, kBlockHeaderSize>(
                                            reinterpret_cast<std::byte*>(value.data()),
                                            kBlockHeaderSize));
    std::memcpy(value.data() + kBlockHeaderSize + 1, p.data(), p.size());
    const auto kb = k.ToBytes();
    REQUIRE(db->Put(rocksdb::WriteOptions(),
                    std::string(reinterpret_cast<const char*>(kb.data()), kb.size()), value)
                .ok());
  }
  if (blob_files) REQUIRE(db->Flush(rocksdb::FlushOptions()).ok());
  REQUIRE(db->Close().ok());
}

size_t CountRecords(const std::string& dir) {
  rocksdb::DB* raw = nullptr;
  REQUIRE(rocksdb::DB::OpenForReadOnly(rocksdb::Options(), dir + "/index", &raw).ok());
  std::unique_ptr<rocksdb::DB> db(raw);
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
  size_t n = 0;
  for (it->SeekToFirst(); it->Valid(); it->Next()) ++n;
  return n;
}

TEST_CASE("a directory of the removed BlobDB back-end is refused with a clear error and kept",
          "[store]") {
  const bool blob_files = GENERATE(true, false);
  INFO("blob files: " << blob_files);
  TempDir dir;
  WriteBlobDbTier(dir.path(), 20, blob_files);
  if (blob_files) {
    bool any = false;
    for (const auto& f : std::filesystem::directory_iterator(dir.path() + "/index"))
      any = any || f.path().extension() == ".blob";
    REQUIRE(any);
  }
  auto t = DiskTier::Open(Opts(dir.path()));
  REQUIRE(t.status().code() == StatusCode::kNotSupported);
  const std::string msg(t.status().message());
  CHECK(msg.find("BlobDB") != std::string::npos);
  CHECK(msg.find("removed") != std::string::npos);
  CHECK(msg.find(dir.path()) != std::string::npos);
  // Nothing was deleted: every record is still there (an open that treated them as bad records
  // would have deleted them), and the read-only reader of `strata inspect` refuses it the same way.
  CHECK(CountRecords(dir.path()) == 20);
  auto r = DiskTierReader::Open(dir.path());
  REQUIRE(r.status().code() == StatusCode::kNotSupported);
  CHECK(std::string(r.status().message()).find("BlobDB") != std::string::npos);
  // Moved aside as the message says, the directory holds a working (empty) tier again.
  std::filesystem::rename(dir.path() + "/index", dir.path() + "/index.blobdb");
  auto fresh = OpenDisk(Opts(dir.path()));
  CHECK(fresh->Stats().blocks == 0);
  REQUIRE(PutTest(*fresh, 1, 5000).ok());
}

}  // namespace
}  // namespace strata::store
