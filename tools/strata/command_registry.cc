#include "command_registry.h"

#include <iostream>
#include <string>
#include <utility>
#include <vector>

namespace strata::cli {
namespace {

std::vector<std::pair<std::string, CommandSetup>>& Registry() {
  static std::vector<std::pair<std::string, CommandSetup>> registry;
  return registry;
}

}  // namespace

bool RegisterCommand(std::string_view group, CommandSetup setup) {
  Registry().emplace_back(std::string(group), std::move(setup));
  return true;
}

void SetupCommands(std::string_view group, CLI::App& parent) {
  for (auto& [g, setup] : Registry())
    if (g == group) setup(parent);
}

void Fail(std::string_view message, int exit_code) {
  std::cerr << "strata: " << message << "\n";
  throw CLI::RuntimeError(exit_code);
}

}  // namespace strata::cli
