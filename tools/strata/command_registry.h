// Self-registration of `strata` subcommands, so that a new command or benchmark is one new .cc
// file (listed in tools/CMakeLists.txt) and no edit to main.cc.
//
//   // in foo_command.cc, at namespace scope:
//   static const bool kRegistered = strata::cli::RegisterCommand("", [](CLI::App& parent) {
//     auto* cmd = parent.add_subcommand("foo", "Does foo");
//     ...
//     cmd->callback([=] { ... throw CLI::RuntimeError(1) on failure ... });
//   });
//
// Group "" adds to `strata` itself; group "bench" adds to `strata bench`.
// Thread-safety: registration happens during static initialisation, before main().
#pragma once

#include <functional>
#include <string_view>

#include <CLI/CLI.hpp>

namespace strata::cli {

using CommandSetup = std::function<void(CLI::App& parent)>;

bool RegisterCommand(std::string_view group, CommandSetup setup);

// Adds every command registered under `group` to `parent`, in name order of registration files.
void SetupCommands(std::string_view group, CLI::App& parent);

// Prints "strata: <message>" to stderr and throws CLI::RuntimeError(exit_code): the way a
// command callback fails.
[[noreturn]] void Fail(std::string_view message, int exit_code = 1);

}  // namespace strata::cli
