// Node ids name files in the static membership directory: only [A-Za-z0-9._-], no "..", at most
// 128 bytes (a node id "../../x" once wrote outside the directory).
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "node/cluster.h"

namespace strata {
namespace {

TEST_CASE("Node ids that could leave the static directory are refused", "[cluster]") {
  const std::vector<std::string> good = {"node-a", "prefill_0", "decode.1", "A9",
                                         std::string(128, 'n')};
  for (const std::string& id : good) CHECK(ValidateNodeId(id).ok());
  const std::vector<std::string> bad = {"",    ".",   "..",          "../../x", "a/b",
                                        "a..b", "/etc/passwd", "x y", "a\\b", "n\n",
                                        std::string(129, 'n'), std::string("a\0b", 3)};
  for (const std::string& id : bad) {
    Status st = ValidateNodeId(id, "static_peers");
    INFO(id);
    CHECK(st.IsInvalidArgument());
    CHECK_THAT(st.ToString(), Catch::Contains("static_peers"));
  }
}

}  // namespace
}  // namespace strata
