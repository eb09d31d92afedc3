// Daemon configuration: byte sizes, YAML file, environment, flags, precedence, checks against the
// machine, and clear errors that name the setting and its source.
#include "daemon/config.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>

namespace strata {
namespace {

std::string WriteTemp(const std::string& text) {
  std::string path = std::string(STRATA_BINARY_DIR) + "/test-tmp-config-" + std::to_string(getpid()) + ".yaml";
  std::ofstream(path) << text;
  return path;
}

TEST_CASE("Byte sizes: KiB..TiB are powers of 2, KB..TB powers of 10", "[lib]") {
  CHECK(*ParseByteSize("1048576") == 1048576);
  CHECK(*ParseByteSize("4096B") == 4096);
  CHECK(*ParseByteSize("64KiB") == 65536);
  CHECK(*ParseByteSize("512MiB") == 512ull << 20);
  CHECK(*ParseByteSize("4GiB") == 4ull << 30);
  CHECK(*ParseByteSize("2 TiB") == 2ull << 40);
  CHECK(*ParseByteSize(" 3GiB ") == 3ull << 30);
  CHECK(*ParseByteSize("64KB") == 64000);
  CHECK(*ParseByteSize("64kB") == 64000);
  CHECK(*ParseByteSize("1GB") == 1000000000);  // not GiB
  CHECK(*ParseByteSize("512MB") == 512000000);
  CHECK(*ParseByteSize("2 TB") == 2000000000000);
  CHECK(*ParseByteSize("17179869183GiB") == 17179869183ull << 30);  // 2^64 - 1 GiB
  CHECK(ParseByteSize("").status().IsInvalidArgument());
  CHECK(ParseByteSize("GiB").status().IsInvalidArgument());
  CHECK(ParseByteSize("4XB").status().IsInvalidArgument());
  CHECK(ParseByteSize("-1GiB").status().IsInvalidArgument());
  CHECK(ParseByteSize("1.5GiB").status().IsInvalidArgument());
  CHECK(ParseByteSize("99999999999999999999").status().IsInvalidArgument());
  CHECK(ParseByteSize("99999999999GiB").status().IsInvalidArgument());
  CHECK(ParseByteSize("17179869184GiB").status().IsInvalidArgument());  // 2^64
}

TEST_CASE("Byte sizes: a bare K, M, G or T is refused as ambiguous, naming both meanings",
          "[lib]") {
  for (const char* bare : {"64K", "64k", "256M", "1G", "1000T"}) {
    Status st = ParseByteSize(bare).status();
    INFO(bare << " -> " << st.ToString());
    CHECK(st.IsInvalidArgument());
    CHECK(st.ToString().find("ambiguous") != std::string::npos);
    CHECK(st.ToString().find("iB (powers of 2)") != std::string::npos);
  }
  CHECK(ParseByteSize("1G").status().ToString().find("1GiB") != std::string::npos);
  CHECK(ParseByteSize("1G").status().ToString().find("1GB") != std::string::npos);
}

TEST_CASE("Zero or empty sizes are errors that name their source", "[lib]") {
  ServeConfig c;
  struct Case {
    const char* key;
    const char* value;
    const char* source;
  };
  for (const Case& k : {Case{"host_pool", "0", "flag --host-pool"},
                        Case{"host_pool", "0GiB", "environment STRATA_HOST_POOL"},
                        Case{"host_pool", "", "flag --host-pool"},
                        Case{"disk", "0", "flag --disk"},
                        Case{"disk", "", "config 'x.yaml'"}}) {
    Status st = ApplySetting(k.key, k.value, k.source, &c);
    INFO(k.key << "='" << k.value << "' from " << k.source << " -> " << st.ToString());
    CHECK(st.IsInvalidArgument());
    CHECK(st.ToString().find(k.source) != std::string::npos);
    CHECK(st.ToString().find(k.key) != std::string::npos);
  }
  // A flag's error does not claim to come from the environment.
  Status st = ApplySetting("host_pool", "0", "flag --host-pool", &c);
  CHECK(st.ToString().find("environment") == std::string::npos);
  CHECK(ApplySetting("disk", "0", "flag --disk", &c).ToString().find("--no-disk") !=
        std::string::npos);
  CHECK(c.node.host_pool_bytes == 0);  // nothing was set by the failed settings
  CHECK(c.node.disk_bytes == 0);
  Status env = ApplyEnvironment({{"STRATA_HOST_POOL", "0"}}, &c);
  CHECK(env.IsInvalidArgument());
  CHECK(env.ToString().find("environment STRATA_HOST_POOL") != std::string::npos);
}

TEST_CASE("A host pool larger than the machine's memory is an error, not an exception", "[lib]") {
  ServeConfig c;
  REQUIRE(ApplySetting("host_pool", "1000TiB", "flag --host-pool", &c).ok());
  HostResources machine;
  machine.physical_memory_bytes = 64ull << 30;
  ConfigWarnings w;
  Status st = FinishConfig(machine, &c, &w);
  INFO(st.ToString());
  CHECK(st.IsInvalidArgument());
  CHECK(st.ToString().find("host_pool") != std::string::npos);
  CHECK(st.ToString().find("64.0 GiB") != std::string::npos);
  // The real machine too (no machine has 1000 TiB of memory).
  CHECK(FinishConfig(DetectHostResources(), &c, &w).IsInvalidArgument());

  ServeConfig tiny;
  REQUIRE(ApplySetting("host_pool", "1MiB", "flag --host-pool", &tiny).ok());
  CHECK(FinishConfig(machine, &tiny, &w).IsInvalidArgument());
  ServeConfig fits;
  REQUIRE(ApplySetting("host_pool", "2GiB", "flag --host-pool", &fits).ok());
  CHECK(FinishConfig(machine, &fits, &w).ok());
  CHECK(fits.node.host_pool_bytes == 2ull << 30);
}

TEST_CASE("A disk bound above the free space is clamped to it, with a warning", "[lib]") {
  const std::string dir = std::string(STRATA_BINARY_DIR) + "/test-tmp-config-disk-" +
                          std::to_string(getpid()) + "/not/yet/created";
  ServeConfig c;
  c.node.data_dir = dir;
  REQUIRE(ApplySetting("disk", "1000TiB", "config 'strata.yaml'", &c).ok());
  ConfigWarnings w;
  REQUIRE(FinishConfig(HostResources{}, &c, &w).ok());
  CHECK(c.node.disk_bytes < 1000ull << 40);
  CHECK(c.node.disk_bytes > 0);
  REQUIRE(w.size() == 1);
  CHECK(w[0].find("disk: 1000.0 TiB") != std::string::npos);
  CHECK(w[0].find(dir) != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir));  // checking creates nothing

  ServeConfig small;
  small.node.data_dir = dir;
  REQUIRE(ApplySetting("disk", "4MiB", "flag --disk", &small).ok());
  ConfigWarnings none;
  REQUIRE(FinishConfig(HostResources{}, &small, &none).ok());
  CHECK(small.node.disk_bytes == 4ull << 20);
  CHECK(none.empty());
}

TEST_CASE("Misspelled STRATA_* variables are warned about with the nearest name", "[lib]") {
  ServeConfig c;
  ConfigWarnings w;
  REQUIRE(ApplyEnvironment({{"STRATA_HOSTPOOL", "1GiB"},
                            {"STRATA_DATA_DIR", "/d"},
                            {"STRATA_CLI", "/usr/bin/strata"},
                            {"STRATA_ZZZZZZZZZZZZZZZZ", "1"},
                            {"HOME", "/root"}},
                           &c, &w)
              .ok());
  CHECK(c.node.data_dir == "/d");
  CHECK(c.node.host_pool_bytes == 0);
  REQUIRE(w.size() == 2);
  CHECK(w[0].find("STRATA_HOSTPOOL") != std::string::npos);
  CHECK(w[0].find("did you mean STRATA_HOST_POOL?") != std::string::npos);
  CHECK(w[1].find("STRATA_ZZZZZZZZZZZZZZZZ") != std::string::npos);
  CHECK(w[1].find("did you mean") == std::string::npos);
}

TEST_CASE("YAML: duplicate keys warn (the last wins) and a mapping or list for a value is an error",
          "[lib]") {
  ServeConfig c;
  ConfigWarnings w;
  std::string path = WriteTemp("host_pool: 1GiB\npin_ms: 5\nhost_pool: 2GiB\n");
  REQUIRE(ApplyConfigFile(path, &c, &w).ok());
  std::remove(path.c_str());
  CHECK(c.node.host_pool_bytes == 2ull << 30);
  REQUIRE(w.size() == 1);
  CHECK(w[0].find("'host_pool' is set twice (lines 1 and 3)") != std::string::npos);

  for (const char* bad : {"host_pool:\n  size: 1GiB\n", "disk: {a: 1}\n", "? [a, b]\n: 1\n",
                          "? {a: 1}\n: 2\n", "host_pool:\n", "socket: [a, b]\n",
                          "host_pool: 1G\n", "disk: 0\n"}) {
    ServeConfig d;
    std::string p = WriteTemp(bad);
    Status st = Status::OK();
    REQUIRE_NOTHROW(st = ApplyConfigFile(p, &d));
    std::remove(p.c_str());
    INFO(bad << " -> " << st.ToString());
    CHECK(st.IsInvalidArgument());
    CHECK(st.ToString().find("config '") != std::string::npos);
  }
}

TEST_CASE("Config file, then environment, override the defaults", "[lib]") {
  ServeConfig c;
  CHECK(c.daemon.socket_mode == 0600);
  CHECK(c.node.data_dir == "./strata-data");
  std::string path = WriteTemp(
      "socket: /tmp/x.sock\nhost_pool: 2GiB\ndata_dir: /var/lib/strata\nwrite_through: true\n"
      "disk_direct_io: false\neviction_policy: lru\npin_ms: 500\nmax_clients: 8\nsocket_mode: 0660\n");
  REQUIRE(ApplyConfigFile(path, &c).ok());
  std::remove(path.c_str());
  CHECK(c.daemon.socket_path == "/tmp/x.sock");
  CHECK(c.node.host_pool_bytes == 2ull << 30);
  CHECK(c.node.data_dir == "/var/lib/strata");
  CHECK(c.node.write_through);
  CHECK_FALSE(c.node.disk_direct_io);
  CHECK(c.node.eviction_policy == "lru");
  CHECK(c.node.default_pin_ms == 500);
  // Every policy `strata bench trace` replays is a setting (regret: LeCaR's mixing).
  std::string regret = WriteTemp("eviction_policy: regret\n");
  ServeConfig r;
  REQUIRE(ApplyConfigFile(regret, &r).ok());
  std::remove(regret.c_str());
  CHECK(r.node.eviction_policy == "regret");
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

TEST_CASE("verify_loads is off by default and set by YAML, STRATA_VERIFY_LOADS or a bad value "
          "is refused",
          "[lib]") {
  ServeConfig c;
  CHECK_FALSE(c.daemon.verify_loads);
  std::string path = WriteTemp("verify_loads: true\n");
  REQUIRE(ApplyConfigFile(path, &c).ok());
  std::remove(path.c_str());
  CHECK(c.daemon.verify_loads);
  REQUIRE(ApplyEnvironment({{"STRATA_VERIFY_LOADS", "off"}}, &c).ok());
  CHECK_FALSE(c.daemon.verify_loads);
  Status bad = ApplyEnvironment({{"STRATA_VERIFY_LOADS", "sometimes"}}, &c);
  CHECK(bad.IsInvalidArgument());
  CHECK(bad.message().find("STRATA_VERIFY_LOADS") != std::string::npos);
}

TEST_CASE("The device pool is set by YAML device_pool and device or STRATA_DEVICE_POOL and "
          "STRATA_DEVICE",
          "[lib]") {
  ServeConfig c;
  CHECK(c.node.device_pool_bytes == 0);  // no device tier unless asked for
  CHECK(c.node.device == 0);
  std::string path = WriteTemp("device_pool: 4GiB\ndevice: 1\n");
  REQUIRE(ApplyConfigFile(path, &c).ok());
  std::remove(path.c_str());
  CHECK(c.node.device_pool_bytes == 4ull << 30);
  CHECK(c.node.device == 1);
  ConfigWarnings w;
  REQUIRE(ApplyEnvironment({{"STRATA_DEVICE_POOL", "512MiB"}, {"STRATA_DEVICE", "2"}}, &c, &w).ok());
  CHECK(w.empty());  // known variables
  CHECK(c.node.device_pool_bytes == 512ull << 20);
  CHECK(c.node.device == 2);
  REQUIRE(ApplySetting("device_pool", "8GB", "flag --device-pool", &c).ok());
  CHECK(c.node.device_pool_bytes == 8000000000ull);
  REQUIRE(ApplySetting("device", "0", "flag --device", &c).ok());
  CHECK(c.node.device == 0);

  Status zero = ApplySetting("device_pool", "0", "flag --device-pool", &c);
  CHECK(zero.IsInvalidArgument());
  CHECK(zero.ToString().find("flag --device-pool") != std::string::npos);
  CHECK(zero.ToString().find("leave device_pool unset") != std::string::npos);
  CHECK(ApplySetting("device_pool", "4G", "flag --device-pool", &c).IsInvalidArgument());
  Status bad_device = ApplyEnvironment({{"STRATA_DEVICE", "gpu0"}}, &c);
  CHECK(bad_device.IsInvalidArgument());
  CHECK(bad_device.ToString().find("environment STRATA_DEVICE") != std::string::npos);
  CHECK(c.node.device_pool_bytes == 8000000000ull);  // refused values change nothing
  CHECK(c.node.device == 0);
}

TEST_CASE("Trust settings: YAML lists or comma-separated values, then the environment, then flags",
          "[lib]") {
  ServeConfig c;
  std::string path = WriteTemp(
      "socket_group: strata\nallow_uids: [1001, 1002]\nadmin_uids: 0, 1003\n"
      "tenant_uids:\n  - team-a:1001\n  - team-b:1002\n  - 'ns:with:colons:1004'\n"
      "tenant_gids: team-b:2000\nidle_timeout_ms: 0\nmax_clients_per_uid: 4\nmax_pin_ms: 900\n");
  REQUIRE(ApplyConfigFile(path, &c).ok());
  std::remove(path.c_str());
  CHECK(c.daemon.socket_group == "strata");
  CHECK(c.daemon.allowed_uids == std::vector<uid_t>{1001, 1002});
  CHECK(c.daemon.admin_uids == std::vector<uid_t>{0, 1003});
  REQUIRE(c.daemon.tenants.size() == 3);
  CHECK(c.daemon.tenants[0].salt == "team-a");
  CHECK(c.daemon.tenants[0].uids == std::vector<uid_t>{1001});
  CHECK(c.daemon.tenants[1].salt == "team-b");
  CHECK(c.daemon.tenants[1].uids == std::vector<uid_t>{1002});
  CHECK(c.daemon.tenants[1].gids == std::vector<gid_t>{2000});
  CHECK(c.daemon.tenants[2].salt == "ns:with:colons");  // the id follows the last ':'
  CHECK(c.daemon.idle_timeout_ms == 0);
  CHECK(c.daemon.max_clients_per_uid == 4);
  CHECK(c.daemon.max_pin_ms == 900);

  // A later source replaces the grants of its kind: team-a loses its uid and, with no gid
  // either, stops being a private tenant; team-b keeps its gid.
  ConfigWarnings w;
  REQUIRE(ApplyEnvironment({{"STRATA_TENANT_UIDS", "team-b:1005"}, {"STRATA_ALLOW_GIDS", "7"}},
                           &c, &w)
              .ok());
  CHECK(w.empty());
  REQUIRE(c.daemon.tenants.size() == 1);
  CHECK(c.daemon.tenants[0].salt == "team-b");
  CHECK(c.daemon.tenants[0].uids == std::vector<uid_t>{1005});
  CHECK(c.daemon.tenants[0].gids == std::vector<gid_t>{2000});
  CHECK(c.daemon.allowed_gids == std::vector<gid_t>{7});
  REQUIRE(FinishConfig(HostResources{}, &c, &w).ok());
  CHECK(c.node.tenants == 2);  // the shared tenant and team-b

  // Refused values name their source and change nothing.
  for (const char* bad : {"team-a", ":1001", "team-a:", "team-a:x", "team-a:1,,team-b:2"}) {
    Status st = ApplySetting("tenant_uids", bad, "flag --tenant-uid", &c);
    CHECK(st.IsInvalidArgument());
    CHECK(st.ToString().find("flag --tenant-uid") != std::string::npos);
  }
  CHECK(ApplySetting("max_pin_ms", "0", "flag --max-pin-ms", &c).IsInvalidArgument());
  CHECK(ApplySetting("max_clients_per_uid", "0", "env", &c).IsInvalidArgument());
  CHECK(ApplySetting("allow_uids", "-1", "env", &c).IsInvalidArgument());
  REQUIRE(c.daemon.tenants.size() == 1);
  CHECK(c.daemon.tenants[0].uids == std::vector<uid_t>{1005});
  CHECK(c.daemon.max_pin_ms == 900);

  std::string many;
  for (int i = 0; i < 256; ++i) many += (i ? "," : "") + std::string("t") + std::to_string(i) + ":1";
  REQUIRE(ApplySetting("tenant_uids", many, "flag --tenant-uid", &c).ok());
  Status too_many = FinishConfig(HostResources{}, &c, &w);
  CHECK(too_many.IsInvalidArgument());
  CHECK(too_many.ToString().find("at most 255") != std::string::npos);
}

TEST_CASE("Disk compression is set by YAML disk_compression, STRATA_DISK_COMPRESSION or "
          "--disk-compression and refuses unknown codecs",
          "[lib]") {
  ServeConfig c;
  CHECK(c.node.disk_compression == "none");  // off by default
  std::string path = WriteTemp("disk_compression: lz4\n");
  REQUIRE(ApplyConfigFile(path, &c).ok());
  std::remove(path.c_str());
  CHECK(c.node.disk_compression == "lz4");
  ConfigWarnings w;
  REQUIRE(ApplyEnvironment({{"STRATA_DISK_COMPRESSION", "zstd:5"}}, &c, &w).ok());
  CHECK(w.empty());  // a known variable
  CHECK(c.node.disk_compression == "zstd:5");
  REQUIRE(ApplySetting("disk_compression", "zstd", "flag --disk-compression", &c).ok());
  CHECK(c.node.disk_compression == "zstd");
  for (const char* bad : {"gzip", "zstd:fast", "zstd:100"}) {
    Status st = ApplySetting("disk_compression", bad, "flag --disk-compression", &c);
    INFO(st.ToString());
    CHECK(st.IsInvalidArgument());
    CHECK(st.ToString().find("flag --disk-compression") != std::string::npos);
    CHECK(st.ToString().find("disk_compression") != std::string::npos);
  }
  CHECK(c.node.disk_compression == "zstd");  // refused values change nothing
}

TEST_CASE("Disk admission is set by YAML disk_admission_min_frequency, "
          "STRATA_DISK_ADMISSION_MIN_FREQUENCY or --disk-admission-min-frequency and refuses "
          "values the sketch cannot count",
          "[lib]") {
  ServeConfig c;
  CHECK(c.node.disk_admission_min_frequency == 0);  // every victim by default
  std::string path = WriteTemp("disk_admission_min_frequency: 2\n");
  REQUIRE(ApplyConfigFile(path, &c).ok());
  std::remove(path.c_str());
  CHECK(c.node.disk_admission_min_frequency == 2);
  ConfigWarnings w;
  REQUIRE(ApplyEnvironment({{"STRATA_DISK_ADMISSION_MIN_FREQUENCY", "3"}}, &c, &w).ok());
  CHECK(w.empty());  // a known variable
  CHECK(c.node.disk_admission_min_frequency == 3);
  REQUIRE(ApplySetting("disk_admission_min_frequency", "15", "flag --disk-admission-min-frequency",
                       &c)
              .ok());
  CHECK(c.node.disk_admission_min_frequency == 15);
  for (const char* bad : {"16", "-1", "two", "", "2.5", "4294967296"}) {
    Status st = ApplySetting("disk_admission_min_frequency", bad,
                             "environment STRATA_DISK_ADMISSION_MIN_FREQUENCY", &c);
    INFO(st.ToString());
    CHECK(st.IsInvalidArgument());
    CHECK(st.ToString().find("environment STRATA_DISK_ADMISSION_MIN_FREQUENCY") !=
          std::string::npos);
    CHECK(st.ToString().find("disk_admission_min_frequency") != std::string::npos);
  }
  CHECK(ApplySetting("disk_admission_min_frequency", "16", "env", &c).ToString().find("15") !=
        std::string::npos);  // says the bound
  CHECK(c.node.disk_admission_min_frequency == 15);  // refused values change nothing
  path = WriteTemp("disk_admission_min_frequency: 99\n");
  Status st = ApplyConfigFile(path, &c);
  std::remove(path.c_str());
  CHECK(st.IsInvalidArgument());
  CHECK(st.ToString().find(path) != std::string::npos);
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
