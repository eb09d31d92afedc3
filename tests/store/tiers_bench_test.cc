// `strata bench tiers --cases steady` end to end, small: the JSON the benchmark's readers use, and
// what any correct run must show (every timed put evicts one block, every admitted victim is
// either demoted or counted as dropped, the printed ratio is the median of the per-pair ratios).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../lib/run_command.h"
#include "store_test_util.h"

namespace {

using strata::store::testing::TempDir;

TEST_CASE("bench tiers steady case: every put evicts and demotes or drops, ratios from pairs",
          "[store]") {
  TempDir dir;
  const std::string cmd = std::string(STRATA_CLI_PATH) +
                          " bench tiers --json --cases steady --disk-mib 16 --steady-host-mib 64"
                          " --dir " + dir.path() + " 2>&1";
  const auto r = strata::testing::RunCommand(cmd);
  INFO(cmd << "\n" << r.output);
  REQUIRE(r.exit_code == 0);
  std::vector<nlohmann::json> cases;
  for (const std::string& l : r.Lines()) cases.push_back(nlohmann::json::parse(l));
  REQUIRE(cases.size() == 8);  // put and demote x 256KiB, 2MiB x wait=0, the default wait
  for (const auto& c : cases) {
    INFO(c.dump());
    const std::string name = c["case"];
    REQUIRE((name.rfind("steady_put/", 0) == 0 || name.rfind("steady_demote/", 0) == 0));
    REQUIRE(c["baseline"] == (name.rfind("steady_put/", 0) == 0 ? "memcpy_x2" : "dd_odirect"));
    REQUIRE(c["value"].get<double>() > 0);
    REQUIRE(c["baseline_value"].get<double>() > 0);
    // The ratio printed is the median of the per-pair ratios (5 pairs).
    const auto& pairs = c["pairs"];
    REQUIRE(pairs.size() == 5);
    std::vector<double> ratios;
    for (const auto& p : pairs) ratios.push_back(p["ratio"].get<double>());
    std::sort(ratios.begin(), ratios.end());
    REQUIRE(c["ratio"].get<double>() == Approx(ratios[2]));
    const bool waits = c["demotion_wait_us"].get<int64_t>() > 0;
    REQUIRE(name.find(waits ? "/wait=50ms" : "/wait=0") != std::string::npos);
    const uint64_t block = c["block_bytes"];
    for (const auto& r : c["runs"]) {
      INFO(r.dump());
      REQUIRE(r["puts"].get<uint64_t>() == 16 * (uint64_t{1} << 20) / block);
      REQUIRE(r["evictions"] == r["puts"]);  // the pool was full: every put evicted one block
      REQUIRE(r["demoted"].get<uint64_t>() + r["dropped"].get<uint64_t>() ==
              r["evictions"].get<uint64_t>());
      if (!waits) REQUIRE(r["waits"] == 0);
      // With the wait, a victim is dropped only when a wait ran out.
      if (waits) REQUIRE(r["dropped"].get<uint64_t>() <= r["wait_timeouts"].get<uint64_t>());
    }
  }
}

}  // namespace
