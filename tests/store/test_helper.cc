// Helper process of the store tests, so that what they kill or confine runs in a fresh process
// (never in a fork of the multi-threaded test binary, whose copied RocksDB thread pools would
// deadlock):
//
//   strata_store_test_helper write DIR FIRST COUNT SYNC_EVERY
//       crash_test.cc: writes test blocks into a disk tier and prints, after each Sync(),
//       "ACK <i>" for every block that is now durable. The test SIGKILLs it at random points.
//   strata_store_test_helper full-disk DIR
//       full_disk_test.cc: mounts a 24 MiB tmpfs on DIR in a private mount namespace and fills a
//       disk tier there; exit code 0 when the full disk behaved (full_disk_test.cc lists codes).
#include <sched.h>
#include <sys/mount.h>

#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "store/disk_tier.h"
#include "store_test_util.h"

using namespace strata;
using namespace strata::store;


namespace {

int FullDisk(const std::string& mnt);

int Write(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: write DIR FIRST COUNT SYNC_EVERY\n");
    return 2;
  }
  DiskTierOptions o;
  o.path = argv[1];
  o.capacity_bytes = uint64_t{1} << 30;
  o.extend_bytes = uint64_t{8} << 20;
  const uint64_t first = std::strtoull(argv[2], nullptr, 10);
  const uint64_t count = std::strtoull(argv[3], nullptr, 10);
  const uint64_t sync_every = std::max<uint64_t>(1, std::strtoull(argv[4], nullptr, 10));
  auto tier = DiskTier::Open(o);
  if (!tier.ok()) {
    std::fprintf(stderr, "open: %s\n", tier.status().ToString().c_str());
    return 1;
  }
  std::printf("READY %llu\n", static_cast<unsigned long long>((*tier)->open_info().blocks_recovered));
  std::fflush(stdout);
  std::vector<uint64_t> pending;
  for (uint64_t i = first; i < first + count; ++i) {
    const BlockKey k = testing::TestKey(i);
    const auto p = testing::TestPayload(k, 4096 + (i * 7919) % 200000);
    Status st = (*tier)->Put(testing::TestHeader(k, p), p);
    if (!st.ok()) {
      std::fprintf(stderr, "put %llu: %s\n", static_cast<unsigned long long>(i),
                   st.ToString().c_str());
      return 1;
    }
    pending.push_back(i);
    if (pending.size() == sync_every) {
      st = (*tier)->Sync();
      if (!st.ok()) {
        std::fprintf(stderr, "sync: %s\n", st.ToString().c_str());
        return 1;
      }
      for (uint64_t a : pending) std::printf("ACK %llu\n", static_cast<unsigned long long>(a));
      std::fflush(stdout);
      pending.clear();
    }
  }
  std::printf("DONE\n");
  return 0;
}

int FullDisk(const std::string& mnt) {
  if (unshare(CLONE_NEWNS) != 0) return 10;
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return 11;
  if (mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=24m") != 0) return 12;
  DiskTierOptions o;
  o.path = mnt + "/tier";
  o.capacity_bytes = uint64_t{1} << 30;  // far more than the filesystem has
  o.extend_bytes = uint64_t{4} << 20;
  auto tier = DiskTier::Open(o);
  if (!tier.ok()) {
    std::fprintf(stderr, "open: %s\n", tier.status().ToString().c_str());
    return 13;
  }
  constexpr size_t kBlock = 256 * 1024;
  uint64_t n = 0;
  Status st;
  for (; n < 1000; ++n) {
    const BlockKey k = testing::TestKey(n);
    const auto p = testing::TestPayload(k, kBlock);
    st = (*tier)->Put(testing::TestHeader(k, p), p);
    if (!st.ok()) break;
  }
  std::fprintf(stderr, "full after %llu blocks: %s\n", static_cast<unsigned long long>(n),
               st.ToString().c_str());
  if (!st.IsNoSpace()) return 14;  // must be a clean NoSpace, and before 1000 x 256 KiB
  if (n < 10) return 15;
  // Everything acknowledged is still served intact.
  std::vector<std::byte> out(kBlock);
  for (uint64_t i = 0; i < n; ++i) {
    auto h = (*tier)->Get(testing::TestKey(i), out);
    if (!h.ok() || !testing::IsTestPayload(testing::TestKey(i), out.data(), kBlock)) return 16;
  }
  // Free space, then writes succeed again (the freed extents are reused).
  for (uint64_t i = 0; i < 8; ++i)
    if (!(*tier)->Erase(testing::TestKey(i)).ok()) return 17;
  const BlockKey k = testing::TestKey(5000);
  const auto p = testing::TestPayload(k, kBlock);
  st = (*tier)->Put(testing::TestHeader(k, p), p);
  if (!st.ok()) {
    std::fprintf(stderr, "put after erase: %s\n", st.ToString().c_str());
    return 18;
  }
  tier->reset();  // a clean close on a full filesystem
  auto again = DiskTier::Open(o);
  if (!again.ok()) {
    std::fprintf(stderr, "reopen: %s\n", again.status().ToString().c_str());
    return 19;
  }
  if ((*again)->open_info().blocks_recovered != n - 8 + 1) return 20;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "write") return Write(argc - 1, argv + 1);
  if (mode == "full-disk" && argc == 3) return FullDisk(argv[2]);
  std::fprintf(stderr, "usage: %s write DIR FIRST COUNT SYNC_EVERY | full-disk DIR\n", argv[0]);
  return 2;
}
