// Skipping a test binary whose premise this machine lacks (no GPU, not root, no huge pages).
//
// Catch2 2.x has no SKIP: the binary prints "SKIPPED: <why>" and exits 77, which every test
// binary's ctest entries take as "skipped" (SKIP_RETURN_CODE, strata_add_test_binary in
// tests/CMakeLists.txt). The exit ends the whole binary, so skippable cases live in binaries of
// their own, and a case skips only after its assertions so far passed (REQUIRE): a skip never
// hides a failure.
#ifndef STRATA_TESTS_SKIP_H_
#define STRATA_TESTS_SKIP_H_

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace strata::testing {

inline constexpr int kSkipExitCode = 77;

[[noreturn]] inline void SkipTest(std::string_view why) {
  std::printf("SKIPPED: %.*s\n", static_cast<int>(why.size()), why.data());
  std::fflush(stdout);
  std::_Exit(kSkipExitCode);
}

// Skips unless the test runs as root (setuid to other test users, network namespaces).
inline void RequireRoot(std::string_view why) {
  if (::geteuid() != 0) SkipTest(why);
}

}  // namespace strata::testing

#endif  // STRATA_TESTS_SKIP_H_
