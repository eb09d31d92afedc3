// `strata`: the Strata command-line tool. Commands register themselves (command_registry.h).
#include <iostream>

#include <CLI/CLI.hpp>

#include "command_registry.h"
#include "strata/version.h"

int main(int argc, char** argv) {
  CLI::App app{"Strata: a distributed prefix-cache tier for LLM serving", "strata"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(strata::Version()));

  app.add_subcommand("version", "Print the Strata version")->callback([] {
    std::cout << "strata " << strata::Version() << "\n";
  });

  auto* bench = app.add_subcommand(
      "bench", "Run a benchmark; each prints its figures beside a baseline measured in the same run");
  bench->require_subcommand(1);
  strata::cli::SetupCommands("bench", *bench);
  strata::cli::SetupCommands("", app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return 0;
}
