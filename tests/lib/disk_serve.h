// Real `strata serve` processes for tests: StartServe with any flags, and DiskServe with a host
// pool and a disk tier in `dir`/data, for the tests that store, stop it cleanly and look at (or
// damage) what it left on disk: tests/lib/daemon_disk_test.cc and tests/tools/inspect_test.cc.
// Uses Catch2 (REQUIRE) to fail the test that starts it.
//
// Thread-safety: one thread per object.
#pragma once

#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "strata/client.h"
#include "tests/lib/client_test_util.h"
#include "tests/lib/scratch_files.h"
#include "tools/strata/serve_process.h"

namespace strata::testing {

// A `strata serve` child with `args`, up (a client connects to `socket`); SIGKILLed by the
// destructor unless stopped, so a failed check leaves no daemon behind.
inline std::unique_ptr<cli::ServeProcess> StartServe(const std::vector<std::string>& args,
                                                     const std::string& socket) {
  cli::ServeOptions o;
  o.exe = STRATA_CLI_PATH;
  o.args = args;
  o.socket = socket;
  o.ready = cli::ServeReady::kClientConnects;
  o.start_timeout = std::chrono::seconds(5);
  o.stop_signal = SIGKILL;
  auto serve = cli::SpawnServe(std::move(o));
  INFO(serve.status().ToString());
  REQUIRE(serve.ok());
  return std::move(serve).value();
}

// A `strata serve` with no disk tier and a 64 MiB pool on `dir`/s.sock, plus `extra` flags; its
// output goes to `dir`.log (the daemon creates `dir`).
inline std::unique_ptr<cli::ServeProcess> StartPoolServe(const std::string& dir,
                                                         std::vector<std::string> extra = {}) {
  cli::ServeOptions o;
  o.exe = STRATA_CLI_PATH;
  o.socket = dir + "/s.sock";
  o.args = {"serve", "--socket", o.socket, "--no-disk", "--host-pool", "64MiB"};
  o.args.insert(o.args.end(), extra.begin(), extra.end());
  o.log_file = dir + ".log";
  o.stop_signal = SIGKILL;
  auto serve = cli::SpawnServe(std::move(o));
  INFO(serve.status().ToString() << "\n" << ReadFile(dir + ".log"));
  REQUIRE(serve.ok());
  return std::move(serve).value();
}

// The daemon's stats (Client::Stats), parsed; fails the test when they cannot be read.
inline nlohmann::json StatsJson(Client& c) {
  auto s = c.Stats();
  REQUIRE(s.ok());
  return nlohmann::json::parse(*s);
}

// Loads `p` through `c`: the blocks loaded, and in *exact whether each equals p's payload.
inline size_t LoadPrompt(Client& c, const Namespace& ns, const Prompt& p, bool* exact) {
  Outputs o(p.keys.size(), p.blocks.empty() ? 0 : p.blocks.front().size());
  auto loaded = c.Load(ns, p.keys, o.out).Wait();
  REQUIRE(loaded.ok());
  *exact = true;
  for (size_t i = 0; i < *loaded; ++i) *exact &= o.bufs[i] == p.blocks[i];
  return *loaded;
}

class DiskServe {
 public:
  // Starts `strata serve` on `dir`/s.sock with a `host_pool` pool and a `disk` disk tier, plus
  // `extra` flags; each start's output goes to its own `dir`/serve-N.log. SIGKILLed when
  // destroyed unless Stop() ran.
  explicit DiskServe(const std::string& dir, std::vector<std::string> extra = {},
                     const std::string& disk = "64MiB", const std::string& host_pool = "64MiB")
      : dir_(dir) {
    cli::ServeOptions o;
    o.exe = STRATA_CLI_PATH;
    o.socket = socket();
    o.args = {"serve", "--socket", o.socket, "--data-dir", data(), "--host-pool", host_pool,
              "--disk", disk};
    o.args.insert(o.args.end(), extra.begin(), extra.end());
    o.log_file = dir + "/serve-" + std::to_string(++starts_) + ".log";
    o.ready = cli::ServeReady::kClientConnects;
    o.stop_signal = SIGKILL;
    log_ = o.log_file;
    auto serve = cli::SpawnServe(std::move(o));
    INFO(serve.status().ToString() << "\n" << ReadFile(log_));
    REQUIRE(serve.ok());
    process_ = std::move(serve).value();
  }

  std::unique_ptr<Client> Connect(const ClientOptions& options = {}) {
    auto c = Client::Connect(process_->socket(), options);
    INFO(c.status().ToString());
    REQUIRE(c.ok());
    return std::move(c).value();
  }

  // SIGTERM: a clean shutdown (write-back blocks reach disk). Returns the exit code.
  int Stop() {
    const int status = process_->Stop(SIGTERM);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  std::string socket() const { return dir_ + "/s.sock"; }
  std::string data() const { return dir_ + "/data"; }
  std::string Log() const { return ReadFile(log_); }
  pid_t pid() const { return process_->pid(); }

 private:
  std::string dir_;
  std::string log_;
  static inline int starts_ = 0;
  std::unique_ptr<cli::ServeProcess> process_;
};

}  // namespace strata::testing
