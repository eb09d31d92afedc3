// A full disk is an error for the disk tier, not a crash: the tier runs on a real 24 MiB
// filesystem (a size-limited tmpfs mounted in a private mount namespace of a child process, so
// nothing leaks to the host), is filled until Put returns NoSpace, keeps serving what it holds,
// and accepts writes again once space is freed. Needs CAP_SYS_ADMIN (root, as CI runs).
#include <catch2/catch.hpp>

#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "store/disk_tier.h"
#include "store_test_util.h"

namespace strata::store {
namespace {

using testing::IsTestPayload;
using testing::TempDir;
using testing::TestHeader;
using testing::TestKey;
using testing::TestPayload;

// Runs in the child. Returns 0 on success, else a code naming the failed step.
int FullDiskScenario(const std::string& mnt) {
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
    const BlockKey k = TestKey(n);
    const auto p = TestPayload(k, kBlock);
    st = (*tier)->Put(TestHeader(k, p), p);
    if (!st.ok()) break;
  }
  std::fprintf(stderr, "full after %llu blocks: %s\n", static_cast<unsigned long long>(n),
               st.ToString().c_str());
  if (!st.IsNoSpace()) return 14;  // must be a clean NoSpace, and before 1000 x 256 KiB
  if (n < 10) return 15;
  // Everything acknowledged is still served intact.
  std::vector<std::byte> out(kBlock);
  for (uint64_t i = 0; i < n; ++i) {
    auto h = (*tier)->Get(TestKey(i), out);
    if (!h.ok() || !IsTestPayload(TestKey(i), out.data(), kBlock)) return 16;
  }
  // Free space, then writes succeed again (the freed extents are reused).
  for (uint64_t i = 0; i < 8; ++i)
    if (!(*tier)->Erase(TestKey(i)).ok()) return 17;
  const BlockKey k = TestKey(5000);
  const auto p = TestPayload(k, kBlock);
  st = (*tier)->Put(TestHeader(k, p), p);
  if (!st.ok()) {
    std::fprintf(stderr, "put after erase: %s\n", st.ToString().c_str());
    return 18;
  }
  tier->reset();
  // And the full tier reopens.
  auto again = DiskTier::Open(o);
  if (!again.ok() || (*again)->open_info().blocks_recovered != n - 8 + 1) return 19;
  return 0;
}

TEST_CASE("a full disk makes Put return NoSpace, not crash, and the tier recovers",
          "[store][fulldisk]") {
  TempDir dir;
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) _exit(FullDiskScenario(dir.path()));
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  const int code = WEXITSTATUS(status);
  INFO("child exit code " << code
                          << " (10-12: cannot create the private tmpfs: needs root/CAP_SYS_ADMIN)");
  REQUIRE(code == 0);
}

}  // namespace
}  // namespace strata::store
