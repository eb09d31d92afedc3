#include "strata/token_file.h"

#include <catch2/catch.hpp>

namespace strata::cli {
namespace {

TEST_CASE("Token files: whitespace, commas and brackets", "[tools]") {
  auto t = ParseTokens("1 2\t3\n4,5, 6,\n[7, 8]\r\n");
  REQUIRE(t.ok());
  CHECK(*t == std::vector<uint32_t>{1, 2, 3, 4, 5, 6, 7, 8});
  CHECK(ParseTokens("").ok());
  CHECK(ParseTokens("  \n ")->empty());
  auto max = ParseTokens("4294967295");
  REQUIRE(max.ok());
  CHECK((*max)[0] == 4294967295u);
}

TEST_CASE("Token files: bad tokens name their line and column", "[tools]") {
  for (const char* bad : {"1 2\n3 -4", "1 2\n3 x4", "1 2\n3 4294967296", "1 2\n3 4.5"}) {
    auto t = ParseTokens(bad);
    INFO(bad);
    REQUIRE_FALSE(t.ok());
    CHECK(t.status().IsInvalidArgument());
    CHECK(std::string(t.status().message()).find("line 2 column 3") != std::string::npos);
  }
  auto missing = ReadTokenFile("/nonexistent/tokens.txt");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().IsIOError());
}

}  // namespace
}  // namespace strata::cli
