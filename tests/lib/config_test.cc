// Daemon configuration: byte sizes, YAML file, environment, precedence and clear errors.
#include "daemon/config.h"

#include <fstream>

#include <catch2/catch.hpp>

namespace strata {
namespace {

std::string WriteTemp(const std::string& text) {
  std::string path = std::string(STRATA_BINARY_DIR) + "/test-tmp-config-" + std::to_string(getpid()) + ".yaml";
  std::ofstream(path) << text;
  return path;
}

TEST_CASE("Byte sizes parse with binary units", "[lib]") {
  CHECK(*ParseByteSize("1048576") == 1048576);
  CHECK(*ParseByteSize("64K") == 65536);
  CHECK(*ParseByteSize("512MiB") == 512ull << 20);
  CHECK(*ParseByteSize("4GiB") == 4ull << 30);
  CHECK(*ParseByteSize("2 TB") == 2ull << 40);
  CHECK(ParseByteSize("").status().IsInvalidArgument());
  CHECK(ParseByteSize("GiB").status().IsInvalidArgument());
  CHECK(ParseByteSize("4XB").status().IsInvalidArgument());
  CHECK(ParseByteSize("99999999999999999999G").status().IsInvalidArgument());
}

TEST_CASE("Config file, then environment, override the defaults", "[lib]") {
  ServeConfig c;
  CHECK(c.daemon.socket_mode == 0600);
  CHECK(c.node.data_dir == "./strata-data");
  std::string path = WriteTemp(
      "socket: /tmp/x.sock\nhost_pool: 2GiB\ndata_dir: /var/lib/strata\nwrite_through: true\n"
      "eviction_policy: lru\npin_ms: 500\nmax_clients: 8\nsocket_mode: 0660\n");
  REQUIRE(ApplyConfigFile(path, &c).ok());
  std::remove(path.c_str());
  CHECK(c.daemon.socket_path == "/tmp/x.sock");
  CHECK(c.node.host_pool_bytes == 2ull << 30);
  CHECK(c.node.data_dir == "/var/lib/strata");
  CHECK(c.node.write_through);
  CHECK(c.node.eviction_policy == "lru");
  CHECK(c.node.default_pin_ms == 500);
  CHECK(c.daemon.max_clients == 8);
  CHECK(c.daemon.socket_mode == 0660);

  REQUIRE(ApplyEnvironment({{"STRATA_HOST_POOL", "1GiB"}, {"STRATA_DATA_DIR", "/d"},
                            {"UNRELATED", "x"}},
                           &c)
              .ok());
  CHECK(c.node.host_pool_bytes == 1ull << 30);
  CHECK(c.node.data_dir == "/d");
  CHECK(c.daemon.socket_path == "/tmp/x.sock");
}

TEST_CASE("Bad config names the key and the file", "[lib]") {
  ServeConfig c;
  for (const char* bad : {"host_pool: lots\n", "colour: blue\n", "write_through: maybe\n",
                          "eviction_policy: random\n", "pin_ms: -5\n", "socket: [a, b]\n",
                          "- not\n- a map\n", "host_pool: [unclosed\n"}) {
    std::string path = WriteTemp(bad);
    Status st = ApplyConfigFile(path, &c);
    std::remove(path.c_str());
    INFO(bad << " -> " << st.ToString());
    CHECK(st.IsInvalidArgument());
    CHECK(st.ToString().find("config '") != std::string::npos);
  }
  CHECK(ApplyConfigFile("/nonexistent/strata.yaml", &c).IsIOError());
  Status env = ApplyEnvironment({{"STRATA_PIN_MS", "soon"}}, &c);
  CHECK(env.IsInvalidArgument());
  CHECK(env.ToString().find("STRATA_PIN_MS") != std::string::npos);
}

}  // namespace
}  // namespace strata
