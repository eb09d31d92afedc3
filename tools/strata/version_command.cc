// `strata version [--json]`: the version, and with --json the build options and the versions of
// the libraries this binary was built with (build_info.h), for bug reports and fleet inventories.
//
//   {"version":"0.1.0","build":{"system":"cmake","type":"RelWithDebInfo","compiler":"GNU 12.2.0",
//    "sanitizer":"none","cuda":true,"cuda_version":"13.0.88","cuda_architectures":["80","90"],
//    "ucx":true,"python":true,"benchmarks":true},"libraries":{"ucx":"1.13.1",...}}
//
// A library the build did not use (UCX in a build without it) is null.
#include <iostream>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "build_info.h"
#include "command_registry.h"
#include "strata/version.h"

namespace strata::cli {
namespace {

nlohmann::json SplitList(std::string_view list) {
  nlohmann::json out = nlohmann::json::array();
  while (!list.empty()) {
    size_t end = list.find(';');
    if (end == std::string_view::npos) end = list.size();
    if (end > 0) out.push_back(std::string(list.substr(0, end)));
    list.remove_prefix(end == list.size() ? end : end + 1);
  }
  return out;
}

nlohmann::json VersionJson() {
  namespace bi = build_info;
  nlohmann::json build = {
      {"system", bi::kBuildSystem},
      {"type", bi::kBuildType},
      {"compiler", bi::kCompiler},
      {"sanitizer", bi::kSanitizer},
      {"cuda", bi::kCuda},
      {"cuda_version", bi::kCuda ? nlohmann::json(bi::kCudaVersion) : nlohmann::json(nullptr)},
      {"cuda_architectures", bi::kCuda ? SplitList(bi::kCudaArchitectures) : SplitList("")},
      {"ucx", bi::kUcx},
      {"python", bi::kPython},
      {"benchmarks", bi::kBenchmarks},
  };
  nlohmann::json libraries = nlohmann::json::object();
  for (const auto& lib : bi::kLibraries) {
    std::string_view v = lib.version;
    libraries[lib.name] = v.empty() ? nlohmann::json(nullptr) : nlohmann::json(std::string(v));
  }
  return {{"version", std::string(Version())}, {"build", build}, {"libraries", libraries}};
}

[[maybe_unused]] const bool kRegistered = RegisterCommand("", [](CLI::App& parent) {
  auto* cmd = parent.add_subcommand("version", "Print the Strata version (--json: and the build)");
  auto json = std::make_shared<bool>(false);
  cmd->add_flag("--json", *json,
                "One JSON object: version, build options (CUDA and its architectures, UCX, ...) "
                "and the versions of the libraries linked");
  cmd->callback([json] {
    if (*json) {
      std::cout << VersionJson().dump() << "\n";
    } else {
      std::cout << "strata " << Version() << "\n";
    }
  });
});

}  // namespace
}  // namespace strata::cli
