// `strata`: the Strata command-line tool. Commands register themselves (command_registry.h).
//
// Exit codes: 0 success; 1 a command failed (cli::Fail's default); 2 bad usage (an unknown flag,
// a value that does not parse, a file argument that is not a file); 3 an unexpected exception,
// reported with what threw it rather than left to std::terminate.
#include <exception>
#include <iostream>
#include <new>
#include <typeinfo>

#include <CLI/CLI.hpp>

#include "command_registry.h"
#include "strata/version.h"

namespace {

constexpr int kUsageExit = 2;
constexpr int kUnexpectedExit = 3;

int Run(int argc, char** argv) {
  CLI::App app{"Strata: a distributed prefix-cache tier for LLM serving", "strata"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(strata::Version()));

  auto* bench = app.add_subcommand(
      "bench", "Run a benchmark; each prints its figures beside a baseline measured in the same run");
  bench->require_subcommand(1);
  strata::cli::SetupCommands("bench", *bench);
  strata::cli::SetupCommands("", app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::RuntimeError& e) {
    return e.get_exit_code();  // cli::Fail has printed the reason
  } catch (const CLI::ParseError& e) {
    (void)app.exit(e);  // prints the usage error and a pointer to --help
    return kUsageExit;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const std::bad_alloc&) {
    std::cerr << "strata: out of memory\n";
  } catch (const CLI::Error& e) {
    std::cerr << "strata: command-line error: " << e.what() << "\n";
    return kUsageExit;
  } catch (const std::exception& e) {
    std::cerr << "strata: unexpected error (" << typeid(e).name() << "): " << e.what() << "\n";
  } catch (...) {
    std::cerr << "strata: unexpected error of unknown type\n";
  }
  return kUnexpectedExit;
}
