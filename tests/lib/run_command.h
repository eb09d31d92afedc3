// Runs a shell command for a test and returns its exit code and stdout (stderr goes wherever the
// command line sends it: append "2>&1" to capture it). Header-only and free of Catch2, so any test
// binary or helper can use it; callers REQUIRE what they expect of the result.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

namespace strata::testing {

struct CommandResult {
  int exit_code = -1;  // -1: could not start, or ended by a signal
  std::string output;  // stdout

  // The non-empty lines of the output.
  std::vector<std::string> Lines() const {
    std::vector<std::string> lines;
    std::istringstream in(output);
    for (std::string l; std::getline(in, l);)
      if (!l.empty()) lines.push_back(l);
    return lines;
  }
};

inline CommandResult RunCommand(const std::string& command) {
  CommandResult r;
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace strata::testing
