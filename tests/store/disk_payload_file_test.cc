// The disk tier's payload back-end (store/disk_payload_file.h) and its AIO
// reader (store/disk_aio.h) on a real file with O_DIRECT: growth in steps up to
// a limit, writes and verified reads of every shape of extent, checksum and
// end-of-file errors, and the compressed stored form.
#include "store/disk_payload_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <random>
#include <vector>

#include "store/disk_aio.h"
#include "store/disk_record.h"
#include "store_test_util.h"

namespace strata::store::disk {
namespace {

using testing::IsTestPayload;
using testing::TempDir;
using testing::TestHeader;
using testing::TestKey;
using testing::TestPayload;

constexpr uint64_t kMiB = 1 << 20;

struct AlignedBuf {
  std::byte* p;
  size_t n;
  explicit AlignedBuf(size_t bytes)
      : p(static_cast<std::byte*>(std::aligned_alloc(kAlign, RoundUp(bytes, kAlign)))), n(bytes) {}
  ~AlignedBuf() { std::free(p); }
  std::span<std::byte> span() { return {p, RoundUp(n, kAlign)}; }
};

std::unique_ptr<PayloadFile> OpenFile(const std::string& path) {
  auto f = PayloadFile::Open(path, /*direct_io=*/true);
  INFO(f.status().ToString());
  REQUIRE(f.ok());
  return std::move(f).value();
}

TEST_CASE(
    "payload file: grows in steps, never past its limit, and reopens at "
    "its size",
    "[store]") {
  TempDir dir;
  const std::string path = dir.path() + "/blocks.data";
  {
    auto f = OpenFile(path);
    CHECK(f->size() == 0);
    REQUIRE(f->Grow(5000, 64 * 1024, 1 * kMiB).ok());
    CHECK(f->size() == 64 * 1024);  // one whole step
    REQUIRE(f->Grow(60000, 64 * 1024, 1 * kMiB).ok());
    CHECK(f->size() == 64 * 1024);  // already there
    REQUIRE(f->Grow(200000, 1 * kMiB, 300000).ok());
    CHECK(f->size() == RoundUp(300000, kAlign));  // the step is cut at the limit
  }
  auto f = OpenFile(path);
  CHECK(f->size() == RoundUp(300000, kAlign));
}

TEST_CASE(
    "payload file: writes and verified reads of every extent shape, "
    "errors as said",
    "[store]") {
  TempDir dir;
  const std::string path = dir.path() + "/blocks.data";
  auto f = OpenFile(path);
  const int fd = ::open(path.c_str(),
                        O_RDONLY | O_DIRECT | O_CLOEXEC);  // for the AIO reader
  REQUIRE(fd >= 0);
  const size_t sizes[] = {
      1, 4095, 4096, 512 * 1024 - 1, 512 * 1024, 512 * 1024 + 1, 2 * kMiB + 12345};
  REQUIRE(f->Grow(8 * kMiB, 8 * kMiB, 8 * kMiB).ok());
  uint64_t at = 0;
  std::vector<uint64_t> offsets;
  for (size_t i = 0; i < std::size(sizes); ++i) {
    const auto p = TestPayload(TestKey(i), sizes[i]);
    REQUIRE(f->Write(at, p).ok());  // an unaligned vector: bounced and zero-padded
    offsets.push_back(at);
    at += RoundUp(sizes[i], kAlign);
  }
  for (size_t i = 0; i < std::size(sizes); ++i) {
    INFO("size " << sizes[i]);
    const auto p = TestPayload(TestKey(i), sizes[i]);
    const BlockHeader h = TestHeader(TestKey(i), p);
    const uint32_t alloc = static_cast<uint32_t>(RoundUp(sizes[i], kAlign));
    AlignedBuf aligned(alloc);  // read in place
    REQUIRE(f->ReadVerified(offsets[i], alloc, aligned.span(), h).ok());
    CHECK(IsTestPayload(TestKey(i), aligned.p, sizes[i]));
    std::vector<std::byte> exact(sizes[i] + 1);  // neither aligned nor padded: bounced
    REQUIRE(f->ReadVerified(offsets[i], alloc, std::span(exact).subspan(1), h).ok());
    CHECK(IsTestPayload(TestKey(i), exact.data() + 1, sizes[i]));
    std::vector<std::byte> plain(sizes[i]);
    REQUIRE(f->Read(offsets[i], alloc, plain, sizes[i]).ok());
    CHECK(IsTestPayload(TestKey(i), plain.data(), sizes[i]));
    // The AIO reader itself, when this thread has a context (else the fallback
    // served above).
    const auto other = TestPayload(TestKey(i + 100), sizes[i]);
    if (AioAvailable()) {
      AlignedBuf direct(alloc);
      REQUIRE(ReadVerifiedAio(fd, offsets[i], direct.p, alloc, h).ok());
      CHECK(IsTestPayload(TestKey(i), direct.p, sizes[i]));
      CHECK(ReadVerifiedAio(fd, offsets[i], direct.p, alloc, TestHeader(TestKey(i), other))
                .IsCorruption());
    }
    // Another block's checksum: Corruption, whichever reader.
    CHECK(f->ReadVerified(offsets[i], alloc, aligned.span(), TestHeader(TestKey(i), other))
              .IsCorruption());
  }
  // Past the end of the file: Corruption, not a short payload.
  AlignedBuf past(64 * 1024);
  const auto p = TestPayload(TestKey(1), 64 * 1024);
  CHECK(f->ReadVerified(f->size() - 4096, 64 * 1024, past.span(), TestHeader(TestKey(1), p))
            .IsCorruption());
  REQUIRE(f->Sync().ok());
  ::close(fd);
}

TEST_CASE(
    "payload file: the compressed stored form round-trips and damage is "
    "undecodable",
    "[store]") {
  TempDir dir;
  auto f = OpenFile(dir.path() + "/blocks.data");
  REQUIRE(f->Grow(4 * kMiB, 4 * kMiB, 4 * kMiB).ok());
  DiskCompressionOptions zstd;
  zstd.kind = DiskCompression::kZstd;
  // Compressible: runs of one byte.
  std::vector<std::byte> raw(256 * 1024);
  for (size_t i = 0; i < raw.size(); ++i) raw[i] = static_cast<std::byte>(i / 4096);
  BlockHeader h = MakeBlockHeader(TestKey(1), NamespaceId{1, 1}, Codec::kNone, raw);
  auto c = CompressForDisk(zstd, raw);
  REQUIRE(c.ok());
  REQUIRE_FALSE(c->empty());
  REQUIRE(RoundUp(c->size(), kAlign) < raw.size());
  const uint32_t stored = static_cast<uint32_t>(c->size());
  const uint32_t alloc = static_cast<uint32_t>(RoundUp(stored, kAlign));
  REQUIRE(f->Write(0, std::span<const std::byte>(c->data(), alloc)).ok());
  std::vector<std::byte> out(raw.size());
  bool undecodable = true;
  REQUIRE(f->ReadCompressed(0, alloc, stored, DiskCompression::kZstd, out, h, &undecodable).ok());
  CHECK(out == raw);
  // Incompressible, or too small to save a page: stored raw (empty span).
  std::vector<std::byte> noise(256 * 1024);
  std::mt19937_64 rng(3);
  for (auto& b : noise) b = static_cast<std::byte>(rng());
  auto n = CompressForDisk(zstd, noise);
  REQUIRE(n.ok());
  CHECK(n->empty());
  auto small = CompressForDisk(zstd, std::span<const std::byte>(raw.data(), 4096));
  REQUIRE(small.ok());
  CHECK(small->empty());
  // Damaged stored bytes: Corruption, flagged undecodable.
  std::vector<std::byte> junk(alloc, std::byte{0x5A});
  REQUIRE(f->Write(0, junk).ok());
  undecodable = false;
  CHECK(f->ReadCompressed(0, alloc, stored, DiskCompression::kZstd, out, h, &undecodable)
            .IsCorruption());
  CHECK(undecodable);
}

}  // namespace
}  // namespace strata::store::disk
