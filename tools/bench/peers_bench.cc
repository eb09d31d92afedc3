// `strata bench peers`: Strata beside LMCache and Mooncake Store, same machine, same workload, same
// run. The systems compared are Python packages (deploy/install-peers.sh puts them in a virtual
// environment), so the benchmark itself is bench/peers_bench.py, shipped next to this binary in
// share/strata/bench/; this command finds that script, the peers' interpreter and the strata Python
// package of this build, and runs it with this binary as the `strata serve` it starts.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "../strata/command_registry.h"

namespace strata::bench {
namespace {

namespace fs = std::filesystem;

struct Options {
  bool json = false;
  std::string sizes = "64KiB,2MiB";
  std::string clients = "1,4";
  int mib_per_client = 256;
  std::string cases = "trace,put_get,restart,transfer,vllm";
  int transfer_mib = 128;
  int reps = 5;
  std::string peers;       // empty: every installed peer
  bool embedded = true;    // Strata's embedded mode beside LMCache in-process
  int strata_pool_mib = 0;  // Strata's daemon pool of at least this; 0: what the case needs
  std::string python;  // the peers' interpreter; default: see FindPython
};

fs::path ExeDir() {
  std::error_code ec;
  return fs::read_symlink("/proc/self/exe", ec).parent_path();
}

// --python, else $STRATA_PEERS_VENV/bin/python, else the first .venv-peers/bin/python found in the
// directories above this binary (a build tree inside the source tree: <repo>/build/bin/strata).
std::string FindPython(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* v = std::getenv("STRATA_PEERS_VENV")) return (fs::path(v) / "bin/python").string();
  std::error_code ec;
  for (fs::path d = ExeDir(); !d.empty() && d != d.root_path(); d = d.parent_path()) {
    const fs::path py = d / ".venv-peers" / "bin" / "python";
    if (fs::exists(py, ec)) return py.string();
  }
  return "";
}

[[noreturn]] void Run(const Options& opt) {
  const fs::path exe_dir = ExeDir();
  std::error_code ec;
  const fs::path script = exe_dir / ".." / "share" / "strata" / "bench" / "peers_bench.py";
  if (!fs::is_regular_file(script, ec))
    cli::Fail("bench peers: " + script.string() + " is missing (it is built and installed with "
              "the strata binary)");
  const std::string python = FindPython(opt.python);
  if (python.empty() || !fs::exists(python, ec))
    cli::Fail("bench peers: the peers (LMCache, Mooncake) are not installed: run "
              "deploy/install-peers.sh (a virtual environment in <repo>/.venv-peers), or pass "
              "--python or STRATA_PEERS_VENV");
  // The strata package of this build (<build>/python) or of the installed tree.
  const fs::path pkg = exe_dir / ".." / "python";
  if (fs::is_directory(pkg / "strata", ec)) {
    std::string path = fs::weakly_canonical(pkg, ec).string();
    if (const char* old = std::getenv("PYTHONPATH")) path += std::string(":") + old;
    ::setenv("PYTHONPATH", path.c_str(), 1);
  }
  const std::string self = fs::read_symlink("/proc/self/exe", ec).string();
  std::vector<std::string> args = {python,  script.string(), "--strata-cli", self,
                                   "--sizes", opt.sizes,     "--clients",    opt.clients,
                                   "--mib-per-client", std::to_string(opt.mib_per_client),
                                   "--cases", opt.cases, "--transfer-mib",
                                   std::to_string(opt.transfer_mib), "--reps",
                                   std::to_string(opt.reps)};
  if (!opt.peers.empty()) {
    args.push_back("--peers");
    args.push_back(opt.peers);
  }
  if (!opt.embedded) args.push_back("--no-embedded");
  if (opt.strata_pool_mib > 0) {
    args.push_back("--strata-pool-mib");
    args.push_back(std::to_string(opt.strata_pool_mib));
  }
  if (opt.json) args.push_back("--json");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  ::execv(python.c_str(), argv.data());
  cli::Fail("bench peers: cannot run " + python);
}

[[maybe_unused]] const bool kRegistered = cli::RegisterCommand("bench", [](CLI::App& parent) {
  auto opt = std::make_shared<Options>();
  auto* cmd = parent.add_subcommand(
      "peers",
      "Store/load, transfer, restart and overhead beside Mooncake, LMCache and vLLM (same run)");
  cmd->add_flag("--json", opt->json, "One JSON object per case (DESIGN.md's benchmark format)");
  cmd->add_option("--sizes", opt->sizes, "Block sizes (64KiB, 2MiB)")->capture_default_str();
  cmd->add_option("--clients", opt->clients, "Client process counts")->capture_default_str();
  cmd->add_option("--mib-per-client", opt->mib_per_client, "MiB each client stores per case")
      ->capture_default_str();
  cmd->add_option("--cases", opt->cases,
                  "Cases to run: trace, put_get (with memory/PSS overhead), restart (with disk "
                  "overhead), transfer (prefill->decode between two nodes), vllm")
      ->capture_default_str();
  cmd->add_option("--transfer-mib", opt->transfer_mib, "Prefix size of the transfer case (MiB)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--reps", opt->reps, "Transfer repetitions (the median is reported)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--peers", opt->peers,
                  "Only these peers, comma-separated (mooncake, lmcache, lmcache-disk, "
                  "lmcache-server); default: every installed one");
  cmd->add_flag("!--no-embedded", opt->embedded,
                "Skip Strata's embedded mode (no daemon) beside LMCache in-process");
  cmd->add_option("--strata-pool-mib", opt->strata_pool_mib,
                  "Strata's daemon host pool of at least this many MiB (a production-sized pool: "
                  "how clients map it depends on its size); default: what each case needs")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--python", opt->python,
                  "Interpreter with the peers installed (default: .venv-peers, see "
                  "deploy/install-peers.sh)");
  cmd->callback([opt] { Run(*opt); });
});

}  // namespace
}  // namespace strata::bench
