// Runs a test body in a forked child as another user (root tests: tenants, socket permissions).
#pragma once

#include <grp.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <functional>

#include <catch2/catch.hpp>

namespace strata::testing {

// Runs `body` in a child process as uid/gid `id`; returns its exit code (body's return value;
// 100 for a failure to become that user).
inline int RunAs(uid_t id, const std::function<int()>& body) {
  std::fflush(nullptr);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    if (::setgroups(0, nullptr) != 0 || ::setgid(id) != 0 || ::setuid(id) != 0) std::_Exit(100);
    std::_Exit(body());
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  return WEXITSTATUS(status);
}

}  // namespace strata::testing
