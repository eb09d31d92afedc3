// A full disk is an error for the disk tier, not a crash: the tier runs on a real 24 MiB
// filesystem (a size-limited tmpfs mounted in a private mount namespace of a helper process, so
// nothing leaks to the host), is filled until Put returns NoSpace, keeps serving what it holds,
// accepts writes again once space is freed, and reopens. Needs CAP_SYS_ADMIN (root, as CI runs).
// The scenario itself is `strata_store_test_helper full-disk` (test_helper.cc).
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include "store_test_util.h"

namespace strata::store {
namespace {

using testing::TempDir;

TEST_CASE("a full disk makes Put return NoSpace, not crash, and the tier recovers",
          "[store][fulldisk]") {
  REQUIRE(access(STRATA_STORE_TEST_HELPER, X_OK) == 0);  // built with the tests
  TempDir dir;
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    execl(STRATA_STORE_TEST_HELPER, STRATA_STORE_TEST_HELPER, "full-disk", dir.path().c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  const int code = WEXITSTATUS(status);
  INFO("helper exit code " << code
                           << " (10-12: cannot create the private tmpfs: needs root/CAP_SYS_ADMIN;"
                              " 13-20: see FullDisk in test_helper.cc)");
  REQUIRE(code == 0);
}

}  // namespace
}  // namespace strata::store
