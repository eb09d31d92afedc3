// The disk tier's RocksDB index (store/disk_index.h) on a real RocksDB in a
// temporary directory: records written, deleted and read back in key order
// across reopen, and a damaged index repaired at open with its records kept.
#include "store/disk_index.h"

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "store_test_util.h"

namespace strata::store::disk {
namespace {

using testing::TempDir;
using testing::TestKey;

std::vector<std::byte> Value(uint64_t i) {
  std::vector<std::byte> v(80 + i % 7);
  for (size_t j = 0; j < v.size(); ++j) v[j] = static_cast<std::byte>(i * 31 + j);
  return v;
}

struct Scan {
  int begins = 0;
  std::map<std::string, std::vector<std::byte>> records;
  std::vector<std::string> order;
  DiskIndex::BeginScan begin() {
    return [this](uint64_t) {
      ++begins;
      records.clear();
      order.clear();
    };
  }
  DiskIndex::OnRecord on_record() {
    return [this](std::span<const std::byte> k, std::span<const std::byte> v) {
      std::string key(reinterpret_cast<const char*>(k.data()), k.size());
      order.push_back(key);
      records[key].assign(v.begin(), v.end());
    };
  }
};

std::unique_ptr<DiskIndex> OpenIndex(const std::string& dir, Scan* scan, std::string* recovery) {
  auto idx = DiskIndex::Open(dir, scan->begin(), scan->on_record(), recovery);
  INFO(idx.status().ToString());
  REQUIRE(idx.ok());
  return std::move(idx).value();
}

TEST_CASE(
    "disk index: records written and deleted read back in key order "
    "after reopen",
    "[store]") {
  TempDir dir;
  const std::string path = dir.path() + "/index";
  std::string recovery = "stale";
  {
    Scan scan;
    auto idx = OpenIndex(path, &scan, &recovery);
    CHECK(scan.begins == 1);
    CHECK(scan.records.empty());
    CHECK(recovery.empty());
    for (uint64_t i = 0; i < 100; ++i) REQUIRE(idx->Put(TestKey(i), Value(i), i % 10 == 0).ok());
    for (uint64_t i = 0; i < 100; i += 9) REQUIRE(idx->Delete(TestKey(i)).ok());
    // Raw deletes take any key bytes (a damaged record's key may not be 16
    // bytes).
    REQUIRE(idx->DeleteRaw({DiskIndex::KeyBytes(TestKey(1)), std::string("short")}).ok());
    REQUIRE(idx->SyncWal().ok());
  }
  Scan scan;
  auto idx = OpenIndex(path, &scan, &recovery);
  CHECK(recovery.empty());
  size_t expect = 0;
  for (uint64_t i = 0; i < 100; ++i) {
    const bool gone = i % 9 == 0 || i == 1;
    auto it = scan.records.find(DiskIndex::KeyBytes(TestKey(i)));
    INFO("record " << i);
    if (gone) {
      CHECK(it == scan.records.end());
      continue;
    }
    ++expect;
    REQUIRE(it != scan.records.end());
    CHECK(it->second == Value(i));
  }
  CHECK(scan.records.size() == expect);
  CHECK(std::is_sorted(scan.order.begin(), scan.order.end()));
}

TEST_CASE("disk index: a damaged index is repaired at open and keeps its records", "[store]") {
  TempDir dir;
  const std::string path = dir.path() + "/index";
  std::string recovery;
  {
    Scan scan;
    auto idx = OpenIndex(path, &scan, &recovery);
    for (uint64_t i = 0; i < 50; ++i) REQUIRE(idx->Put(TestKey(i), Value(i), false).ok());
  }  // closed cleanly: the records are in a table
  {
    std::ofstream current(path + "/CURRENT", std::ios::trunc);
    current << "garbage-without-newline";
  }
  Scan scan;
  auto idx = OpenIndex(path, &scan, &recovery);
  INFO(recovery);
  CHECK(recovery.find("damaged") != std::string::npos);
  CHECK(recovery.find("repaired") != std::string::npos);
  CHECK(scan.records.size() == 50);
  CHECK(scan.records[DiskIndex::KeyBytes(TestKey(7))] == Value(7));
  // It writes and reads as before.
  REQUIRE(idx->Put(TestKey(1000), Value(1000), true).ok());
}

TEST_CASE(
    "disk index: an index that cannot be opened for other reasons fails "
    "the open",
    "[store]") {
  TempDir dir;
  // A regular file where the index directory should be: not damage, an error.
  {
    std::ofstream f(dir.path() + "/index");
    f << "x";
  }
  Scan scan;
  std::string recovery;
  auto idx = DiskIndex::Open(dir.path() + "/index", scan.begin(), scan.on_record(), &recovery);
  CHECK_FALSE(idx.ok());
  CHECK(std::filesystem::is_regular_file(dir.path() + "/index"));  // left as it was
}

}  // namespace
}  // namespace strata::store::disk
