// Scratch directories and whole-file reads for the tests that start real processes (tests/lib,
// tests/tools, tests/cluster). Catch-free.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace strata::testing {

// An empty directory /tmp/strata-test-`name`-<pid> (emptied if a crashed run left it).
inline std::string ScratchDir(const std::string& name) {
  std::string d = "/tmp/strata-test-" + name + "-" + std::to_string(::getpid());
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

// The whole file, or "" when it cannot be read (a log that a process never wrote).
inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace strata::testing
