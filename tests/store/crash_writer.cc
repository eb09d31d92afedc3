// Helper process of crash_test.cc: writes test blocks into a disk tier and prints, after each
// Sync(), "ACK <i>" for every block that is now durable. The test SIGKILLs it at random points.
//
// Usage: strata_store_crash_writer DIR FIRST COUNT SYNC_EVERY
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "store/disk_tier.h"
#include "store_test_util.h"

using namespace strata;
using namespace strata::store;

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s DIR FIRST COUNT SYNC_EVERY\n", argv[0]);
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
