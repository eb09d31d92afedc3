// Crash safety of the disk tier: a writer process (`strata_store_test_helper write`, test_helper.cc) is SIGKILLed at random points
// while it writes; after each kill the tier is reopened and every block is checked: each block
// acknowledged as durable is present and correct, and no block is ever served with wrong bytes
// (a torn or half-written one is a miss).
#include <catch2/catch.hpp>

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "store/disk_tier.h"
#include "store_test_util.h"

namespace strata::store {
namespace {

using testing::IsTestPayload;
using testing::TempDir;
using testing::TestKey;

struct RunResult {
  std::set<uint64_t> acked;
  bool ready = false;
};

// Runs the writer on `dir` for keys [first, first + count) and kills it after `kill_after`.
RunResult RunAndKill(const std::string& dir, uint64_t first, uint64_t count,
                     std::chrono::milliseconds kill_after) {
  int out[2];
  REQUIRE(pipe(out) == 0);
  const std::string first_s = std::to_string(first), count_s = std::to_string(count);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    close(out[0]);
    close(out[1]);
    execl(STRATA_STORE_TEST_HELPER, STRATA_STORE_TEST_HELPER, "write", dir.c_str(),
          first_s.c_str(), count_s.c_str(), "7", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(out[1]);
  RunResult r;
  std::string buf;
  auto parse = [&] {
    size_t nl;
    while ((nl = buf.find('\n')) != std::string::npos) {
      const std::string line = buf.substr(0, nl);
      buf.erase(0, nl + 1);
      if (line.rfind("ACK ", 0) == 0) r.acked.insert(std::stoull(line.substr(4)));
      if (line.rfind("READY", 0) == 0) r.ready = true;
    }
  };
  // The kill timer starts when the writer has opened the tier (READY), so a slow start on a busy
  // machine cannot turn a round into a no-op; a writer that never gets ready is killed at 60 s.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  bool timer_started = false;
  bool killed = false;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (!killed && left.count() <= 0) {
      kill(pid, SIGKILL);
      killed = true;
    }
    pollfd p{out[0], POLLIN, 0};
    const int n = poll(&p, 1, killed ? 1000 : static_cast<int>(std::max<int64_t>(1, left.count())));
    if (n <= 0) continue;
    char chunk[4096];
    const ssize_t got = read(out[0], chunk, sizeof(chunk));
    if (got <= 0) break;  // EOF: the writer is gone and the pipe drained
    buf.append(chunk, static_cast<size_t>(got));
    parse();
    if (r.ready && !timer_started) {
      timer_started = true;
      deadline = std::chrono::steady_clock::now() + kill_after;
    }
  }
  close(out[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return r;
}

TEST_CASE("disk tier survives SIGKILL during writes: acked blocks intact, nothing corrupt served",
          "[store][crash]") {
  REQUIRE(access(STRATA_STORE_TEST_HELPER, X_OK) == 0);  // built with the tests
  TempDir dir;
  std::mt19937_64 rng(20251126);
  std::set<uint64_t> acked;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  const uint64_t kPerRound = 100000;  // more than a writer gets through before its kill
  for (int round = 0; round < 6; ++round) {
    const uint64_t first = round * kPerRound;
    const auto kill_after = std::chrono::milliseconds(20 + rng() % 300);
    RunResult r = RunAndKill(dir.path(), first, kPerRound, kill_after);
    INFO("round " << round << " killed after " << kill_after.count() << " ms, acked "
                  << r.acked.size());
    REQUIRE(r.ready);
    acked.insert(r.acked.begin(), r.acked.end());
    ranges.emplace_back(first, first + r.acked.size() + 64);  // acked plus what was in flight

    // Reopen after every kill and check everything written so far.
    DiskTierOptions o;
    o.path = dir.path();
    o.capacity_bytes = uint64_t{1} << 30;
    auto tier = DiskTier::Open(o);
    INFO(tier.status().ToString());
    REQUIRE(tier.ok());
    std::vector<std::byte> out(256 * 1024);
    for (auto [lo, hi] : ranges) {
      for (uint64_t i = lo; i < hi; ++i) {
        auto h = (*tier)->Get(TestKey(i), out);
        if (acked.count(i)) {
          INFO("acked block " << i << ": " << h.status().ToString());
          REQUIRE(h.ok());
        }
        if (h.ok()) REQUIRE(IsTestPayload(TestKey(i), out.data(), h->payload_length));
        else REQUIRE((h.status().IsNotFound() || h.status().IsCorruption()));
      }
    }
  }
  REQUIRE(acked.size() > 50);  // the test really exercised durable writes
}

}  // namespace
}  // namespace strata::store
