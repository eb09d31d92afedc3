// `strata serve --device-pool` (docs/store.md, "The device tier in the node"): on a machine
// without a usable GPU (or a build without CUDA) the daemon refuses to start with a clear error and
// never crashes; on a GPU, blocks that clients loaded are kept in GPU memory and served back to
// host after host dropped them, bit-exact.
//
// Each test that cannot run where it is (the refusal on a GPU machine, the GPU test without one)
// prints "SKIPPED: <why>" and exits 77: ctest reports it skipped (SKIP_RETURN_CODE), never passed.
// This binary holds only these tests, and ctest runs each in its own process.
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "node/node.h"
#include "strata/client.h"
#include "strata/key_chain.h"
#include "tests/lib/client_test_util.h"
#include "tests/lib/disk_serve.h"
#include "tests/lib/scratch_files.h"
#include "tests/skip.h"
#include "tools/strata/serve_process.h"

namespace strata {
namespace {

using testing::LoadPrompt;
using testing::Outputs;
using testing::Prompt;
using testing::ReadFile;
using testing::ScratchDir;
using testing::StatsJson;

constexpr size_t kBlockBytes = 65536;

using testing::SkipTest;

Namespace TestNamespace() {
  return testing::SmallNamespace("test/device-model", kBlockBytes);
}

cli::ServeOptions ServeArgs(const std::string& dir, std::vector<std::string> extra) {
  cli::ServeOptions o;
  o.exe = STRATA_CLI_PATH;
  o.socket = dir + "/s.sock";
  o.args = {"serve", "--socket", o.socket, "--no-disk", "--host-pool", "16MiB"};
  o.args.insert(o.args.end(), extra.begin(), extra.end());
  o.log_file = dir + "/serve.log";
  o.ready = cli::ServeReady::kClientConnects;
  return o;
}

// Starts `strata serve` with `extra`, expecting it to refuse: returns its log after checking that
// it exited (not killed by a signal: no crash) with a non-zero code.
std::string ExpectRefusal(const std::string& dir, std::vector<std::string> extra) {
  cli::ServeOptions o = ServeArgs(dir, std::move(extra));
  const std::string log = o.log_file;
  auto process = cli::ServeProcess::Start(std::move(o));
  REQUIRE(process.ok());
  Status ready = (*process)->WaitReady();
  const std::string text = ReadFile(log);
  INFO(ready.ToString() << "\n" << text);
  REQUIRE(ready.code() == StatusCode::kAborted);  // exited before it was up
  const int status = (*process)->wait_status();
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) != 0);
  return text;
}

TEST_CASE("strata serve --device-pool refuses to start without a usable GPU and says why",
          "[lib][integration]") {
  const Status available = DevicePoolAvailable(0);
  if (available.ok()) SkipTest("a CUDA device is present: the daemon would start");
  const std::string dir = ScratchDir("refuse");
  // The flag, the variable and the YAML key reach the same check, before any socket is bound.
  for (int how = 0; how < 3; ++how) {
    INFO("how " << how);
    std::vector<std::string> extra;
    if (how == 0) extra = {"--device-pool", "64MiB"};
    if (how == 1) ::setenv("STRATA_DEVICE_POOL", "64MiB", 1);
    if (how == 2) {
      std::ofstream(dir + "/strata.yaml") << "device_pool: 64MiB\ndevice: 0\n";
      extra = {"--config", dir + "/strata.yaml"};
    }
    const std::string log = ExpectRefusal(dir, extra);
    ::unsetenv("STRATA_DEVICE_POOL");
    INFO(log);
    CHECK(log.find("device_pool") != std::string::npos);
    CHECK(log.find(std::string(available.message())) != std::string::npos);
#ifdef STRATA_WITH_DEVICE_TIER
    CHECK(log.find("no CUDA device") != std::string::npos);
#else
    CHECK(log.find("this build has no CUDA") != std::string::npos);
#endif
    CHECK_FALSE(std::filesystem::exists(dir + "/s.sock"));
  }
  // Without the flag the same daemon starts: the refusal is the device pool's alone.
  auto serve = cli::SpawnServe(ServeArgs(dir, {}));
  INFO(serve.status().ToString() << "\n" << ReadFile(dir + "/serve.log"));
  REQUIRE(serve.ok());
  std::filesystem::remove_all(dir);
}

TEST_CASE("strata serve --device-pool refuses a bad size or device before touching CUDA",
          "[lib][integration]") {
  const std::string dir = ScratchDir("bad");
  std::string log = ExpectRefusal(dir, {"--device-pool", "64XB"});
  CHECK(log.find("device_pool") != std::string::npos);
  log = ExpectRefusal(dir, {"--device-pool", "0"});
  CHECK(log.find("device_pool: '0' is zero bytes") != std::string::npos);
  log = ExpectRefusal(dir, {"--device-pool", "64MiB", "--device=gpu0"});
  CHECK(log.find("device: 'gpu0' is not a non-negative integer") != std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST_CASE("strata serve --device-pool keeps loaded blocks on the GPU and serves them back after "
          "host dropped them",
          "[lib][integration][gpu]") {
  if (Status st = DevicePoolAvailable(0); !st.ok()) SkipTest(st.ToString());
  const std::string dir = ScratchDir("gpu");
  auto serve = cli::SpawnServe(ServeArgs(dir, {"--device-pool", "64MiB"}));
  INFO(serve.status().ToString() << "\n" << ReadFile(dir + "/serve.log"));
  REQUIRE(serve.ok());
  CHECK(ReadFile(dir + "/serve.log").find("device tier 64 MiB on CUDA device 0") !=
        std::string::npos);
  auto c = Client::Connect((*serve)->socket());
  REQUIRE(c.ok());
  Namespace ns = TestNamespace();
  Prompt p(ns, 8, 7, kBlockBytes);
  REQUIRE(*(*c)->Store(ns, p.keys, p.in).Wait() == 8);
  bool exact = false;
  REQUIRE(LoadPrompt(**c, ns, p, &exact) == 8);  // the load queues the copies to the GPU
  CHECK(exact);
  nlohmann::json s = StatsJson(**c);
  for (int i = 0; i < 200 && s["device"]["blocks"] != 8; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
    s = StatsJson(**c);
  }
  INFO(s.dump(2));
  REQUIRE(s["device"]["blocks"] == 8);
  CHECK(s["device_copies"] == 8);
  CHECK(s["device_copy_batches"] >= 1);

  // 48 MiB of other prompts through a 16 MiB host pool: the first prompt leaves host.
  for (uint32_t seed = 100; seed < 103; ++seed) {
    Prompt other(ns, 256, seed, kBlockBytes);
    REQUIRE((*c)->Store(ns, other.keys, other.in).Wait().ok());
  }
  auto look = (*c)->Lookup(p.keys);
  REQUIRE(look.ok());
  REQUIRE(look->matched_blocks == 8);  // all still in the node: host or GPU
  size_t on_device = 0;
  for (Tier t : look->tiers) on_device += t == Tier::kDevice;
  REQUIRE(on_device > 0);
  CHECK(LoadPrompt(**c, ns, p, &exact) == 8);
  CHECK(exact);
  s = StatsJson(**c);
  CHECK(s["device_promotions"] >= on_device);
  CHECK(s["device_corrupt"] == 0);
  CHECK(s["device"]["served_blocks"] >= on_device);
  look = (*c)->Lookup(p.keys);
  REQUIRE(look.ok());
  CHECK(look->tiers == std::vector<Tier>(8, Tier::kHost));  // promoted back
  std::printf("[gpu] %zu of 8 blocks came back from the GPU; stats: %s\n", on_device,
              s.dump().c_str());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace strata
