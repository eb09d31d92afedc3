#include "bench/mooncake_trace.h"

#include <cstdio>
#include <fstream>

#include <catch2/catch.hpp>

namespace strata::bench {
namespace {

std::string WriteTemp(const std::string& text) {
  std::string path = std::string(STRATA_BINARY_DIR) + "/test-tmp-trace-" + std::to_string(getpid());
  std::ofstream(path) << text;
  return path;
}

TEST_CASE("The shipped Mooncake trace reads and shares prefixes", "[tools]") {
  auto trace = ReadMooncakeTrace(DefaultTracePath());
  REQUIRE(trace.ok());
  CHECK(trace->size() == 3993);
  const auto& r0 = (*trace)[0];
  CHECK(r0.input_length == 40160);
  CHECK(r0.hash_ids.size() == 79);
  auto tokens = SynthesizeTokens(r0);
  CHECK(tokens.size() == 40160);
}

TEST_CASE("Synthesised tokens share exactly the shared hash-id prefix", "[tools]") {
  TraceRequest a{0, 1024, 1, {7, 8}}, b{0, 1024, 1, {7, 9}};
  auto ta = SynthesizeTokens(a), tb = SynthesizeTokens(b);
  REQUIRE(ta.size() == 1024);
  CHECK(std::equal(ta.begin(), ta.begin() + 512, tb.begin()));
  CHECK_FALSE(std::equal(ta.begin() + 512, ta.end(), tb.begin() + 512));
}

TEST_CASE("Malformed trace lines are rejected with their line number", "[tools]") {
  for (const char* bad : {"{\"hash_ids\": [1,2]}\nnot json\n", "{\"hash_ids\": [1,2]}\n{\"x\": 1}\n",
                          "{\"hash_ids\": [1]}\n{\"hash_ids\": [-1]}\n",
                          "{\"hash_ids\": [1]}\n{\"hash_ids\": [1], \"input_length\": \"9\"}\n"}) {
    std::string path = WriteTemp(bad);
    auto t = ReadMooncakeTrace(path);
    std::remove(path.c_str());
    INFO(bad);
    REQUIRE_FALSE(t.ok());
    CHECK(t.status().IsInvalidArgument());
    CHECK(std::string(t.status().message()).find(":2:") != std::string::npos);
  }
  CHECK(ReadMooncakeTrace("/nonexistent.jsonl").status().IsIOError());
}

}  // namespace
}  // namespace strata::bench
