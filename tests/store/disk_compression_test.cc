// Compression of disk-tier payloads (store/disk_compression.h, DiskTierOptions::compression): the
// setting's syntax, round trips per compression, directories written under one setting read under
// another, incompressible and lossless-coded blocks stored raw, damaged compressed records (a miss
// and a counter, never a crash), capacity counted in stored bytes, the offline reader, and
// write-back demotion through TieredStore.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <vector>

#include "store/disk_compression.h"
#include "store/disk_tier.h"
#include "store/disk_tier_reader.h"
#include "store/tiered_store.h"
#include "store_test_util.h"

namespace strata::store {
namespace {

using testing::IsTestPayload;
using testing::TempDir;
using testing::TestHeader;
using testing::TestKey;
using testing::TestPayload;

constexpr uint64_t kMiB = 1 << 20;
const NamespaceId kNs{1, 2};

DiskCompressionOptions Compression(const char* text) {
  auto c = ParseDiskCompression(text);
  REQUIRE(c.ok());
  return *c;
}

DiskTierOptions Opts(const std::string& path, const char* compression,
                     uint64_t capacity = 256 * kMiB) {
  DiskTierOptions o;
  o.path = path;
  o.capacity_bytes = capacity;
  o.extend_bytes = 4 * kMiB;
  o.compression = Compression(compression);
  return o;
}

std::unique_ptr<DiskTier> OpenDisk(const DiskTierOptions& o) {
  auto t = DiskTier::Open(o);
  INFO(t.status().ToString());
  REQUIRE(t.ok());
  return std::move(t).value();
}

// Bytes that both lz4 and zstd shrink several-fold, determined by `key` alone: each 4 KiB page
// repeats one 256-byte random chunk of the key's with its page number written in, like KV
// planes with long runs of similar values.
std::vector<std::byte> Compressible(const BlockKey& key, size_t size) {
  std::mt19937_64 rng(key.low ^ key.high);
  std::vector<std::byte> chunk(256);
  for (auto& b : chunk) b = static_cast<std::byte>(rng());
  std::vector<std::byte> out(size);
  for (size_t i = 0; i < size; ++i) out[i] = chunk[i % chunk.size()];
  for (size_t page = 0; page * 4096 < size; ++page)
    out[page * 4096] = static_cast<std::byte>(page);
  return out;
}

Status PutBytes(DiskTier& t, const BlockKey& k, const std::vector<std::byte>& p,
                Codec codec = Codec::kNone) {
  BlockHeader h = TestHeader(k, p);
  h.codec = codec;
  return t.Put(h, p);
}

// Get into a fresh buffer; the bytes must equal `want`.
void RequireReads(DiskTier& t, const BlockKey& k, const std::vector<std::byte>& want) {
  std::vector<std::byte> out(want.size() + 4096);
  auto h = t.Get(k, out);
  INFO(h.status().ToString());
  REQUIRE(h.ok());
  REQUIRE(h->payload_length == want.size());
  REQUIRE(std::memcmp(out.data(), want.data(), want.size()) == 0);
}

uint64_t RoundUp4K(uint64_t n) { return (n + 4095) / 4096 * 4096; }

TEST_CASE("disk compression setting: none, lz4, zstd, zstd:LEVEL - anything else is refused",
          "[store]") {
  CHECK(Compression("none").kind == DiskCompression::kNone);
  CHECK(Compression("lz4").kind == DiskCompression::kLz4);
  CHECK(Compression("zstd").kind == DiskCompression::kZstd);
  CHECK(Compression("zstd").zstd_level == 1);
  CHECK(Compression("zstd:9").zstd_level == 9);
  CHECK(Compression("zstd:-5").zstd_level == -5);
  CHECK(DiskCompressionName(Compression("zstd:7")) == "zstd:7");
  CHECK(DiskCompressionName(Compression("lz4")) == "lz4");
  for (const char* bad : {"gzip", "zstd:", "zstd:x", "zstd:99", "lz4:3", "ZSTD", "zstd:3x"}) {
    INFO(bad);
    auto c = ParseDiskCompression(bad);
    REQUIRE(c.status().IsInvalidArgument());
    CHECK(c.status().message().find("zstd") != std::string_view::npos);
  }
}

TEST_CASE("disk tier compression round-trips blocks with each compression and after a restart",
          "[store]") {
  const size_t sizes[] = {1, 4096, 3 * 4096 + 17, 64 * 1024, 512 * 1024 + 1, 2 * kMiB + 123};
  for (const char* c : {"none", "lz4", "zstd", "zstd:-5", "zstd:9"}) {
    INFO("compression " << c);
    TempDir dir;
    const bool on = std::string(c) != "none";
    uint64_t raw = 0, stored = 0;
    {
      auto t = OpenDisk(Opts(dir.path(), c));
      for (size_t i = 0; i < std::size(sizes); ++i) {
        const BlockKey k = TestKey(i);
        REQUIRE(PutBytes(*t, k, Compressible(k, sizes[i])).ok());
        raw += sizes[i];
        // Find reports the raw length, what a reader's buffer must hold.
        REQUIRE(t->Find(k)->length == sizes[i]);
      }
      for (size_t i = 0; i < std::size(sizes); ++i)
        RequireReads(*t, TestKey(i), Compressible(TestKey(i), sizes[i]));
      const TierStats st = t->Stats();
      CHECK(st.raw_payload_bytes == raw);
      // Blocks of one page cannot shrink on disk: every larger one is stored compressed.
      CHECK(st.compressed_blocks == (on ? std::size(sizes) - 2 : 0));
      CHECK(st.stored_raw == (on ? 2 : 0));
      if (on) CHECK(st.payload_bytes * 4 < raw);
      stored = st.payload_bytes;
      // Unaligned, exactly-sized output buffer (no room for the padded extent).
      const BlockKey k = TestKey(4);
      std::vector<std::byte> exact(sizes[4] + 1);
      auto h = t->Get(k, std::span<std::byte>(exact).subspan(1));
      REQUIRE(h.ok());
      REQUIRE(std::memcmp(exact.data() + 1, Compressible(k, sizes[4]).data(), sizes[4]) == 0);
    }
    auto t = OpenDisk(Opts(dir.path(), c));
    REQUIRE(t->open_info().blocks_recovered == std::size(sizes));
    REQUIRE(t->open_info().records_dropped == 0);
    CHECK(t->Stats().payload_bytes == stored);
    CHECK(t->Stats().raw_payload_bytes == raw);
    for (size_t i = 0; i < std::size(sizes); ++i)
      RequireReads(*t, TestKey(i), Compressible(TestKey(i), sizes[i]));
  }
}

TEST_CASE("disk tier compression: a directory written under one setting reads under any other",
          "[store]") {
  TempDir dir;
  const char* settings[] = {"none", "lz4", "zstd", "none", "zstd:3"};
  const size_t kSize = 200 * 1024;
  uint64_t compressed_expected = 0;
  for (size_t round = 0; round < std::size(settings); ++round) {
    INFO("round " << round << ", " << settings[round]);
    auto t = OpenDisk(Opts(dir.path(), settings[round]));
    REQUIRE(t->open_info().blocks_recovered == round * 10);
    REQUIRE(t->open_info().records_dropped == 0);
    for (uint64_t i = round * 10; i < round * 10 + 10; ++i) {
      const BlockKey k = TestKey(i);
      REQUIRE(PutBytes(*t, k, Compressible(k, kSize)).ok());
    }
    if (std::string(settings[round]) != "none") compressed_expected += 10;
    for (uint64_t i = 0; i < round * 10 + 10; ++i)
      RequireReads(*t, TestKey(i), Compressible(TestKey(i), kSize));
    CHECK(t->Stats().compressed_blocks == compressed_expected);
  }
  // The offline reader (strata inspect --data-dir) reads every kind of record.
  auto reader = DiskTierReader::Open(dir.path());
  REQUIRE(reader.ok());
  REQUIRE((*reader)->records().size() == 50);
  REQUIRE((*reader)->bad_records() == 0);
  uint64_t compressed = 0, reserved = 0;
  for (const DiskRecord& r : (*reader)->records()) {
    auto ok = (*reader)->Verify(r);
    REQUIRE(ok.ok());
    CHECK(*ok);
    CHECK(r.header.payload_length == kSize);
    reserved += r.reserved_bytes;
    if (r.compression != DiskCompression::kNone) {
      ++compressed;
      CHECK(r.stored_bytes < kSize);
      CHECK(r.reserved_bytes == RoundUp4K(r.stored_bytes));
    } else {
      CHECK(r.stored_bytes == kSize);
    }
  }
  CHECK(compressed == 30);
  auto t = OpenDisk(Opts(dir.path(), "none"));
  CHECK(t->Stats().payload_bytes == reserved);
}

TEST_CASE("disk tier compression stores incompressible and lossless-coded blocks raw",
          "[store]") {
  TempDir dir;
  auto t = OpenDisk(Opts(dir.path(), "zstd"));
  // Random bytes (TestPayload) do not shrink by a page: stored raw, read back as they are.
  for (uint64_t i = 0; i < 5; ++i) {
    const BlockKey k = TestKey(i);
    REQUIRE(PutBytes(*t, k, TestPayload(k, 100000 + i)).ok());
  }
  // A block its producer already coded losslessly (shuffle_zstd) is not compressed again, even
  // when its bytes would shrink.
  const BlockKey coded = TestKey(99);
  REQUIRE(PutBytes(*t, coded, Compressible(coded, 65536), Codec::kShuffleZstd).ok());
  TierStats st = t->Stats();
  CHECK(st.compressed_blocks == 0);
  CHECK(st.stored_raw == 6);
  CHECK(st.raw_payload_bytes == 5 * 100000 + 10 + 65536);
  CHECK(st.payload_bytes == 5 * RoundUp4K(100004) + 65536);
  for (uint64_t i = 0; i < 5; ++i) RequireReads(*t, TestKey(i), TestPayload(TestKey(i), 100000 + i));
  RequireReads(*t, coded, Compressible(coded, 65536));
  t.reset();
  auto reader = DiskTierReader::Open(dir.path());
  REQUIRE(reader.ok());
  for (const DiskRecord& r : (*reader)->records()) CHECK(r.compression == DiskCompression::kNone);
}

// Damages the stored bytes of `key` in blocks.data at [from, to) of its extent.
void Damage(const std::string& dir, uint64_t offset, uint64_t from, uint64_t to, bool flip) {
  const std::string data = dir + "/blocks.data";
  const int fd = ::open(data.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  std::vector<std::byte> buf(to - from);
  REQUIRE(pread(fd, buf.data(), buf.size(), static_cast<off_t>(offset + from)) ==
          static_cast<ssize_t>(buf.size()));
  for (auto& b : buf) b = flip ? (b ^ std::byte{0x5A}) : std::byte{0};
  REQUIRE(pwrite(fd, buf.data(), buf.size(), static_cast<off_t>(offset + from)) ==
          static_cast<ssize_t>(buf.size()));
  ::close(fd);
}

TEST_CASE("disk tier compression: a corrupted or truncated compressed record is a miss and "
          "counted, never a crash",
          "[store]") {
  for (const char* c : {"lz4", "zstd"}) {
    INFO("compression " << c);
    TempDir dir;
    const size_t kSize = 256 * 1024;
    std::vector<uint64_t> offset(8);
    {
      auto t = OpenDisk(Opts(dir.path(), c));
      for (uint64_t i = 0; i < 8; ++i) {
        const BlockKey k = TestKey(i);
        REQUIRE(PutBytes(*t, k, Compressible(k, kSize)).ok());
        offset[i] = t->Find(k)->offset;
      }
      REQUIRE(t->Stats().compressed_blocks == 8);
    }
    auto reader = DiskTierReader::Open(dir.path());
    REQUIRE(reader.ok());
    const uint32_t stored = (*reader)->Find(TestKey(1))->stored_bytes;
    REQUIRE(stored > 64);
    reader = Status::NotFound("closed");
    // Block 1: its stream cut short (the second half of the stored bytes zeroed).
    Damage(dir.path(), offset[1], stored / 2, stored, /*flip=*/false);
    // Block 2: bytes flipped in the middle of the stream.
    Damage(dir.path(), offset[2], stored / 3, stored / 3 + 16, /*flip=*/true);
    // Block 3: its start (the stream's header) overwritten.
    Damage(dir.path(), offset[3], 0, 8, /*flip=*/true);

    // The offline reader says so too (inspect verify), without failing.
    {
      auto damaged = DiskTierReader::Open(dir.path());
      REQUIRE(damaged.ok());
      for (uint64_t i = 0; i < 8; ++i) {
        auto ok = (*damaged)->Verify(*(*damaged)->Find(TestKey(i)));
        REQUIRE(ok.ok());
        CHECK(*ok == (i < 1 || i > 3));
      }
    }

    auto t = OpenDisk(Opts(dir.path(), c));
    std::vector<std::byte> out(kSize);
    for (uint64_t i = 1; i <= 3; ++i) {
      INFO("block " << i);
      auto h = t->Get(TestKey(i), out);
      CHECK(h.status().IsCorruption());
      CHECK(t->Get(TestKey(i), out).status().IsNotFound());  // dropped: a miss from now on
    }
    TierStats st = t->Stats();
    CHECK(st.corrupt_dropped == 3);
    // The cut stream never decompresses; a flipped byte may still decode (to wrong bytes that
    // the checksum refuses) or may not.
    CHECK(st.decompress_errors >= 2);
    CHECK(st.decompress_errors <= 3);
    CHECK(st.compressed_blocks == 5);

    // blocks.data cut short under the running tier: block 7's extent now ends early.
    std::filesystem::resize_file(dir.path() + "/blocks.data", offset[7] + stored / 2);
    CHECK(t->Get(TestKey(7), out).status().IsCorruption());
    CHECK(t->Get(TestKey(7), out).status().IsNotFound());
    // The tier keeps serving the intact blocks and storing new ones.
    for (uint64_t i : {0, 4, 5}) RequireReads(*t, TestKey(i), Compressible(TestKey(i), kSize));
    const BlockKey fresh = TestKey(100);
    REQUIRE(PutBytes(*t, fresh, Compressible(fresh, kSize)).ok());
    RequireReads(*t, fresh, Compressible(fresh, kSize));
  }
}

TEST_CASE("disk tier compression: capacity and Stats count stored (compressed) bytes", "[store]") {
  const size_t kSize = 256 * 1024;
  for (const char* c : {"none", "zstd"}) {
    INFO("compression " << c);
    TempDir dir;
    auto t = OpenDisk(Opts(dir.path(), c, 4 * kMiB));
    // 10 MiB of blocks that compress ~8x into a 4 MiB tier.
    for (uint64_t i = 0; i < 40; ++i) {
      const BlockKey k = TestKey(i);
      REQUIRE(PutBytes(*t, k, Compressible(k, kSize)).ok());
    }
    const TierStats st = t->Stats();
    CHECK(st.payload_bytes <= 4 * kMiB);
    if (std::string(c) == "none") {
      CHECK(st.evictions == 40 - 16);
      CHECK(st.raw_payload_bytes == 16 * kSize);
    } else {
      CHECK(st.evictions == 0);  // all 40 fit: the bound is on bytes on disk
      CHECK(st.blocks == 40);
      CHECK(st.raw_payload_bytes == 40 * kSize);
      CHECK(st.payload_bytes < st.raw_payload_bytes / 4);
      for (uint64_t i = 0; i < 40; ++i)
        RequireReads(*t, TestKey(i), Compressible(TestKey(i), kSize));
    }
    // The file never grew past the bound.
    CHECK(std::filesystem::file_size(dir.path() + "/blocks.data") <= 4 * kMiB);
  }
}

TEST_CASE("tiered store: write-back demotion compresses, promotion decompresses bit-exact",
          "[store]") {
  TempDir dir;
  TieredStoreOptions o;
  o.host.capacity_bytes = 4 * kMiB;
  o.host.pool.slab_bytes = 2 * kMiB;
  o.host.hugetlb = false;
  o.disk_admission_min_frequency = 0;  // every evicted block goes to disk
  DiskTierOptions d = Opts(dir.path(), "lz4", 64 * kMiB);
  o.disk = d;
  auto s = TieredStore::Open(o);
  INFO(s.status().ToString());
  REQUIRE(s.ok());
  TieredStore& store = **s;
  const size_t kSize = 64 * 1024;
  for (uint64_t i = 0; i < 200; ++i) {
    const BlockKey k = TestKey(i);
    REQUIRE(store.Put(k, kNs, Compressible(k, kSize)).ok());
  }
  store.DrainDemotions();
  const StoreStats st = store.Stats();
  REQUIRE(st.demotions > 100);
  CHECK(st.disk.compressed_blocks == st.disk.blocks);
  CHECK(st.disk.payload_bytes * 4 < st.disk.raw_payload_bytes);
  // Block 0 left host long ago: a Get reads it from disk, decompresses, verifies and promotes.
  REQUIRE_FALSE(store.host().Find(TestKey(0)).ok());
  std::vector<std::byte> out(kSize);
  auto h = store.Get(TestKey(0), out);
  REQUIRE(h.ok());
  CHECK(out == Compressible(TestKey(0), kSize));
  CHECK(store.host().Find(TestKey(0)).ok());
  CHECK(store.Stats().promotions == 1);
  // Prefetch takes the same path.
  const BlockKey k1 = TestKey(1);
  REQUIRE(store.Prefetch(std::span<const BlockKey>(&k1, 1))->Wait() == 1);
  std::vector<std::byte> out1(kSize);
  REQUIRE(store.host().Get(k1, out1).ok());
  CHECK(out1 == Compressible(k1, kSize));
}

}  // namespace
}  // namespace strata::store
