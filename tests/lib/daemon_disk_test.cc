// A real `strata serve` with a disk tier against damaged or full disks (issue 14, "the daemon
// keeps serving"): a block whose payload fails verification is dropped, counted and can be stored
// again; a damaged RocksDB index never stops the daemon from starting; a write-through store that
// the disk refuses leaves nothing visible. And `--disk-compression`: blocks written back
// compressed, a directory read under another setting, damaged compressed records dropped.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "strata/client.h"
#include "store/disk_tier.h"
#include "strata/block_format.h"
#include "strata/key_chain.h"
#include "strata_kernels/kv_synth.h"
#include "tests/lib/client_test_util.h"
#include "tests/lib/disk_serve.h"
#include "tests/lib/run_command.h"
#include "tests/lib/scratch_files.h"
#include "tools/strata/serve_process.h"

namespace strata {
namespace {

using Serve = testing::DiskServe;
using testing::LoadPrompt;
using testing::Outputs;
using testing::Prompt;
using testing::ReadFile;
using testing::ScratchDir;
using testing::StatsJson;

constexpr size_t kBlockBytes = 65536;

Namespace TestNamespace(size_t block_bytes = kBlockBytes) {
  return testing::SmallNamespace("test/disk-model", block_bytes);
}

TEST_CASE("strata serve: a disk block whose payload was flipped is dropped and counted, then "
          "stored again and served bit-exact",
          "[lib][integration]") {
  const std::string dir = ScratchDir("flip");
  Namespace ns = TestNamespace();
  Prompt p(ns, 8, 41, kBlockBytes);
  {
    Serve serve(dir);
    REQUIRE(*serve.Connect()->Store(ns, p.keys, p.in).Wait() == 8);
    REQUIRE(serve.Stop() == 0);  // write-back: the clean shutdown writes them to disk
  }
  // Flip one byte in every 4 KiB page of the payload file: every block's payload is damaged,
  // while the index (and every block header) is intact.
  const std::string slab = dir + "/data/blocks.data";
  REQUIRE(std::filesystem::file_size(slab) >= 8 * kBlockBytes);
  {
    std::fstream f(slab, std::ios::in | std::ios::out | std::ios::binary);
    const uint64_t size = std::filesystem::file_size(slab);
    for (uint64_t off = 100; off < size; off += 4096) {
      f.seekg(static_cast<std::streamoff>(off));
      const char c = static_cast<char>(f.get());
      f.seekp(static_cast<std::streamoff>(off));
      f.put(static_cast<char>(c ^ 0x01));
    }
  }
  Serve serve(dir);
  auto c = serve.Connect();
  auto look = c->Lookup(p.keys);
  REQUIRE(look.ok());
  CHECK(look->matched_blocks == 8);  // the index still names them: only reading can tell
  bool exact = false;
  CHECK(LoadPrompt(*c, ns, p, &exact) == 0);  // never damaged bytes: a miss
  CHECK(StatsJson(*c)["disk"]["corrupt_dropped"] == 8);
  CHECK(c->Lookup(p.keys)->matched_blocks == 0);  // dropped, not left to fail again
  // Stored again: newly committed (not "cached already"), then served bit-exact.
  CHECK(*c->Store(ns, p.keys, p.in).Wait() == 8);
  CHECK(LoadPrompt(*c, ns, p, &exact) == 8);
  CHECK(exact);
  REQUIRE(serve.Stop() == 0);
  // And after another restart, from disk.
  Serve again(dir);
  auto c2 = again.Connect();
  CHECK(LoadPrompt(*c2, ns, p, &exact) == 8);
  CHECK(exact);
  again.Stop();
  std::filesystem::remove_all(dir);
}

// A data directory with 8 blocks on disk (write-back, clean shutdown): the RocksDB index is then
// flushed to a table, so there is a MANIFEST and an SST to damage.
void Populate(const std::string& dir, const Namespace& ns, const Prompt& p) {
  Serve serve(dir);
  REQUIRE(*serve.Connect()->Store(ns, p.keys, p.in).Wait() == 8);
  REQUIRE(serve.Stop() == 0);
}

std::vector<std::filesystem::path> IndexFiles(const std::string& dir, const std::string& prefix,
                                              const std::string& suffix = "") {
  std::vector<std::filesystem::path> out;
  for (const auto& e : std::filesystem::directory_iterator(dir + "/data/index")) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) == 0 && name.size() >= suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      out.push_back(e.path());
  }
  return out;
}

// After damage: `strata serve` starts, says what it did to the index, serves a load (bit-exact,
// or a miss for what was lost) and stores and loads new blocks.
void CheckStartsAndServes(const std::string& dir, const Namespace& ns, const Prompt& p) {
  Serve serve(dir);
  auto c = serve.Connect();
  const std::string log = serve.Log();
  INFO(log);
  CHECK(log.find("disk tier: index at") != std::string::npos);
  bool exact = false;
  const size_t n = LoadPrompt(*c, ns, p, &exact);
  CHECK(exact);  // whatever survived is served bit-exact
  std::printf("[disk] after the damage: %zu of 8 blocks still served\n", n);
  Prompt fresh(ns, 4, 45, kBlockBytes);
  CHECK(*c->Store(ns, fresh.keys, fresh.in).Wait() == 4);
  CHECK(LoadPrompt(*c, ns, fresh, &exact) == 4);
  CHECK(exact);
  CHECK(serve.Stop() == 0);
}

TEST_CASE("strata serve: a truncated RocksDB MANIFEST does not stop the daemon from starting",
          "[lib][integration]") {
  const std::string dir = ScratchDir("manifest");
  Namespace ns = TestNamespace();
  Prompt p(ns, 8, 46, kBlockBytes);
  Populate(dir, ns, p);
  const auto manifests = IndexFiles(dir, "MANIFEST-");
  REQUIRE(!manifests.empty());
  // Cut inside its first record (the version snapshot): RocksDB refuses to open it. (A cut tail
  // record is read as a crash mid-append and opens without it.)
  for (const auto& m : manifests) std::filesystem::resize_file(m, 20);
  CheckStartsAndServes(dir, ns, p);
  std::filesystem::remove_all(dir);
}

TEST_CASE("strata serve: a flipped byte in a RocksDB table does not stop the daemon from starting",
          "[lib][integration]") {
  const std::string dir = ScratchDir("sst");
  Namespace ns = TestNamespace();
  Prompt p(ns, 8, 47, kBlockBytes);
  Populate(dir, ns, p);
  const auto tables = IndexFiles(dir, "", ".sst");
  REQUIRE(!tables.empty());
  for (const auto& t : tables) {  // a byte in the first data block of every table
    std::fstream f(t, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(40);
    const char c = static_cast<char>(f.get());
    f.seekp(40);
    f.put(static_cast<char>(c ^ 0xFF));
  }
  CheckStartsAndServes(dir, ns, p);
  std::filesystem::remove_all(dir);
}

// Issue 14 (keys carry their namespace's tag): a data directory written before the tag holds
// blocks of block format 1, keyed without it. They must never be served as valid: the daemon
// starts, drops them with a log line, keeps the directory's format 2 blocks and serves.
TEST_CASE("strata serve: blocks of block format 1 (untagged keys) on disk are dropped at start "
          "with a log line - the rest is served",
          "[lib][integration]") {
  const std::string dir = ScratchDir("format1");
  Namespace ns = TestNamespace();
  Prompt p(ns, 8, 49, kBlockBytes);
  Populate(dir, ns, p);  // 8 blocks of the current format
  // 5 blocks as an older build wrote them: version 1 headers, keys without the tag.
  Prompt old(ns, 5, 50, kBlockBytes);
  std::vector<BlockKey> old_keys;
  {
    store::DiskTierOptions o;
    o.path = dir + "/data";
    o.capacity_bytes = 64ull << 20;  // as DiskServe's --disk
    auto disk = store::DiskTier::Open(o);
    INFO(disk.status().ToString());
    REQUIRE(disk.ok());
    for (size_t i = 0; i < old.keys.size(); ++i) {
      const BlockKey untagged{old.keys[i].high ^ kNamespaceTagMask, old.keys[i].low};
      REQUIRE_FALSE(KeyInNamespace(untagged, ns.id()));
      BlockHeader h = MakeBlockHeader(untagged, ns.id(), Codec::kNone, old.blocks[i]);
      h.version = 1;
      REQUIRE((*disk)->Put(h, old.blocks[i]).ok());
      old_keys.push_back(untagged);
    }
    REQUIRE((*disk)->Stats().blocks == 13);
  }
  Serve serve(dir);
  auto c = serve.Connect();
  const std::string log = serve.Log();
  INFO(log);
  CHECK(log.find("dropped 5 blocks of an older block format") != std::string::npos);
  CHECK(c->Lookup(old_keys)->matched_blocks == 0);
  CHECK(StatsJson(*c)["disk"]["blocks"] == 8);
  CHECK(StatsJson(*c)["disk"]["corrupt_dropped"] == 0);  // an old format is not damage
  bool exact = false;
  CHECK(LoadPrompt(*c, ns, p, &exact) == 8);
  CHECK(exact);
  // The old prompt's blocks are stored again under their tagged keys and served.
  CHECK(*c->Store(ns, old.keys, old.in).Wait() == 5);
  CHECK(LoadPrompt(*c, ns, old, &exact) == 5);
  CHECK(exact);
  REQUIRE(serve.Stop() == 0);
  // The next start finds nothing old to drop.
  Serve again(dir);
  CHECK(again.Log().find("older block format") == std::string::npos);
  again.Stop();
  std::filesystem::remove_all(dir);
}

TEST_CASE("strata serve: a write-through store that the disk refuses leaves nothing visible",
          "[lib][integration]") {
  const std::string dir = ScratchDir("wt-full");
  const std::string yaml = dir + "/strata.yaml";
  std::ofstream(yaml) << "write_through: true\n";
  // A disk tier of 128 KiB cannot hold a 256 KiB block: every disk Put is NoSpace.
  Serve serve(dir, {"--config", yaml}, "128KiB");
  auto c = serve.Connect();
  constexpr size_t kBig = 256 << 10;
  Namespace big_ns = TestNamespace(kBig);
  Prompt big(big_ns, 4, 43, kBig);
  auto stored = c->Store(big_ns, big.keys, big.in).Wait();
  INFO(stored.status().ToString());
  CHECK(stored.status().IsNoSpace());
  auto look = c->Lookup(big.keys);
  REQUIRE(look.ok());
  CHECK(look->matched_blocks == 0);  // reported failed: not in host either
  Outputs o(4, kBig);
  auto loaded = c->Load(big_ns, big.keys, o.out).Wait();
  REQUIRE(loaded.ok());
  CHECK(*loaded == 0);
  CHECK(StatsJson(*c)["host"]["blocks"] == 0);
  // Blocks the disk can hold are stored through to it as before.
  Namespace ns = TestNamespace();
  Prompt small(ns, 1, 44, kBlockBytes);
  CHECK(*c->Store(ns, small.keys, small.in).Wait() == 1);
  CHECK(StatsJson(*c)["disk"]["blocks"] == 1);
  serve.Stop();
  std::filesystem::remove_all(dir);
}

// Whether the daemon `pid` holds `path` open with O_DIRECT (the flags line of /proc/PID/fdinfo).
bool OpenDirect(pid_t pid, const std::string& path) {
  const std::string fds = "/proc/" + std::to_string(pid) + "/fd";
  for (const auto& e : std::filesystem::directory_iterator(fds)) {
    std::error_code ec;
    if (std::filesystem::read_symlink(e.path(), ec) != std::filesystem::path(path)) continue;
    std::ifstream info("/proc/" + std::to_string(pid) + "/fdinfo/" + e.path().filename().string());
    for (std::string line; std::getline(info, line);)
      if (line.rfind("flags:", 0) == 0) return (std::stoul(line.substr(6), nullptr, 8) & O_DIRECT);
  }
  FAIL("the daemon does not hold " << path << " open");
  return false;
}

TEST_CASE("strata serve disk_direct_io false: write-through through the page cache, every "
          "acknowledged block served after kill -9",
          "[lib][integration]") {
  const std::string dir = ScratchDir("wt-buffered");
  const std::string yaml = dir + "/strata.yaml";
  Namespace ns = TestNamespace();
  Prompt p(ns, 8, 61, kBlockBytes);
  for (bool direct : {true, false}) {
    std::ofstream(yaml) << "write_through: true\ndisk_direct_io: " << (direct ? "true" : "false")
                        << "\n";
    Serve serve(dir, {"--config", yaml});
    const bool o_direct = OpenDirect(serve.pid(), serve.data() + "/blocks.data");
    if (!direct) CHECK_FALSE(o_direct);
    else if (!o_direct) WARN("no O_DIRECT on " << dir << " (tmpfs?): the tier is buffered");
  }
  std::filesystem::remove_all(dir + "/data");
  {
    std::ofstream(yaml) << "write_through: true\ndisk_direct_io: false\n";
    Serve serve(dir, {"--config", yaml});
    auto c = serve.Connect();
    REQUIRE(*c->Store(ns, p.keys, p.in).Wait() == 8);
    CHECK(StatsJson(*c)["disk"]["blocks"] == 8);  // on disk when acknowledged
  }  // SIGKILL: no clean shutdown
  Serve serve(dir);
  auto c = serve.Connect();
  bool exact = false;
  CHECK(LoadPrompt(*c, ns, p, &exact) == 8);
  CHECK(exact);
  serve.Stop();
  std::filesystem::remove_all(dir);
}

// --disk-admission-min-frequency reaches the store: a 16 MiB host pool (256 blocks) given 512
// blocks each stored once evicts at least 256; with the default (0) every victim is admitted,
// with 2 the victims seen once that no longer have cached children are refused and counted
// (admission is decided at eviction; the writes themselves are asynchronous, so not counted here).
TEST_CASE("strata serve --disk-admission-min-frequency 2 refuses victims seen once - the default "
          "admits every victim",
          "[lib][integration]") {
  const std::string dir = ScratchDir("admission");
  Namespace ns = TestNamespace();
  std::vector<Prompt> prompts;
  for (uint32_t i = 0; i < 8; ++i) prompts.emplace_back(ns, 64, 60 + i, kBlockBytes);
  auto run = [&](std::vector<std::string> flags) {
    std::filesystem::remove_all(dir + "/data");
    Serve serve(dir, std::move(flags), "64MiB", "16MiB");
    auto c = serve.Connect();
    for (const Prompt& p : prompts) REQUIRE(c->Store(ns, p.keys, p.in).Wait().ok());
    nlohmann::json s = StatsJson(*c);
    c.reset();
    REQUIRE(serve.Stop() == 0);
    return s;
  };
  nlohmann::json every = run({});
  INFO(every.dump());
  REQUIRE(every["host"]["evictions"].get<uint64_t>() >= 256);
  CHECK(every["demotions_rejected"] == 0);  // every victim admitted (written or staged)
  nlohmann::json twice = run({"--disk-admission-min-frequency", "2"});
  INFO(twice.dump());
  REQUIRE(twice["host"]["evictions"].get<uint64_t>() >= 256);
  CHECK(twice["demotions_rejected"].get<uint64_t>() > 0);
  std::filesystem::remove_all(dir);
}

// Regression (issue 14, "Data directory 0700, files 0600"): the data directory was created with
// the umask's 0755 and its payload file and RocksDB files 0644, so any local user could read
// every tenant's stored KV from disk. An older version's 0755 directory is made private, logged.
TEST_CASE("strata serve: the data directory is 0700 and every file in it 0600",
          "[lib][integration]") {
  const std::string dir = ScratchDir("modes");
  const std::string data = dir + "/data";
  REQUIRE(std::filesystem::create_directories(data));
  std::filesystem::permissions(data, std::filesystem::perms(0755));
  Namespace ns = TestNamespace();
  Prompt p(ns, 8, 48, kBlockBytes);
  {
    Serve serve(dir);
    REQUIRE(*serve.Connect()->Store(ns, p.keys, p.in).Wait() == 8);
    REQUIRE(serve.Stop() == 0);  // write-back: the clean shutdown writes them and the index
    CHECK(serve.Log().find("was mode 0755, made 0700") != std::string::npos);
  }
  struct stat st {};
  REQUIRE(::stat(data.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
  size_t files = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(data)) {
    if (!e.is_regular_file()) continue;
    REQUIRE(::stat(e.path().c_str(), &st) == 0);
    INFO(e.path().string());
    CHECK((st.st_mode & 077) == 0);
    ++files;
  }
  CHECK(files >= 3);  // blocks.data, the index's MANIFEST, CURRENT, tables or log
  std::filesystem::remove_all(dir);
}

// Realistic KV bytes (kernels' synthesizer, bf16, the shape of TestNamespace) as a prompt's blocks.
void UseKvBytes(Prompt* p, uint64_t seed) {
  kernels::BlockShape shape{2, 2, kBlockBytes / 512, 2, 32, kernels::KvDtype::kBFloat16};
  REQUIRE(shape.bytes() == kBlockBytes);
  kernels::KvSynthOptions o;
  o.seed = seed;
  std::vector<std::byte> all;
  REQUIRE(kernels::SynthesizeKvBlocks(shape, static_cast<uint32_t>(p->blocks.size()), o, &all)
              .ok());
  for (size_t i = 0; i < p->blocks.size(); ++i)
    std::memcpy(p->blocks[i].data(), all.data() + i * kBlockBytes, kBlockBytes);
}

// `strata ARGS`: exit code and stdout.
std::pair<int, std::string> Cli(const std::string& args) {
  auto r = testing::RunCommand(std::string(STRATA_CLI_PATH) + " " + args + " 2>/dev/null");
  return {r.exit_code, std::move(r.output)};
}

TEST_CASE("strata serve --disk-compression zstd: blocks written back compressed, served "
          "bit-exact, readable after a restart without compression",
          "[lib][integration]") {
  const std::string dir = ScratchDir("zstd");
  Namespace ns = TestNamespace();
  Prompt p(ns, 8, 51, kBlockBytes);
  UseKvBytes(&p, 51);
  {
    Serve serve(dir, {"--disk-compression", "zstd"});
    auto c = serve.Connect();
    REQUIRE(*c->Store(ns, p.keys, p.in).Wait() == 8);
    CHECK(StatsJson(*c)["disk"]["blocks"] == 0);  // write-back: on disk at shutdown
    c.reset();
    REQUIRE(serve.Stop() == 0);
  }
  uint64_t on_disk = 0;
  {
    Serve serve(dir, {"--disk-compression", "zstd"});
    auto c = serve.Connect();
    nlohmann::json disk = StatsJson(*c)["disk"];
    INFO(disk.dump());
    CHECK(disk["blocks"] == 8);
    CHECK(disk["compressed_blocks"] == 8);
    CHECK(disk["raw_payload_bytes"] == 8 * kBlockBytes);
    on_disk = disk["payload_bytes"].get<uint64_t>();
    CHECK(on_disk < 8 * kBlockBytes);  // accounted at the stored size
    std::printf("[disk] zstd on synthetic bf16 KV: %llu of %zu bytes on disk (ratio %.3f)\n",
                static_cast<unsigned long long>(on_disk), 8 * kBlockBytes,
                double(8 * kBlockBytes) / double(on_disk));
    bool exact = false;
    CHECK(LoadPrompt(*c, ns, p, &exact) == 8);  // read from disk, decompressed, verified, promoted
    CHECK(exact);
    c.reset();
    REQUIRE(serve.Stop() == 0);
  }
  // Offline, with no daemon: inspect reports the stored size and verifies every block.
  {
    auto [code, out] = Cli("inspect --data-dir " + dir + "/data --json node");
    REQUIRE(code == 0);
    auto j = nlohmann::json::parse(out);
    CHECK(j["tiers"]["disk"]["compressed_blocks"] == 8);
    CHECK(j["tiers"]["disk"]["used_bytes"] == on_disk);
    CHECK(j["tiers"]["disk"]["raw_bytes"] == 8 * kBlockBytes);
    auto [vcode, vout] = Cli("inspect --data-dir " + dir + "/data --json verify");
    CHECK(vcode == 0);
    CHECK(nlohmann::json::parse(vout)["ok"] == 8);
  }
  // Restarted without compression (the default): the compressed records still read, new blocks
  // are written raw beside them.
  Prompt more(ns, 4, 52, kBlockBytes);
  UseKvBytes(&more, 52);
  {
    Serve serve(dir);
    auto c = serve.Connect();
    bool exact = false;
    CHECK(LoadPrompt(*c, ns, p, &exact) == 8);
    CHECK(exact);
    REQUIRE(*c->Store(ns, more.keys, more.in).Wait() == 4);
    c.reset();
    REQUIRE(serve.Stop() == 0);
  }
  // Damage the stream of the block at the start of blocks.data (one of the compressed ones):
  // with zstd again it is a miss and counted, the raw blocks beside it are served, and the
  // daemon keeps storing.
  {
    const std::string slab = dir + "/data/blocks.data";
    std::fstream f(slab, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(1024);
    const std::string zeros(2048, '\0');
    f.write(zeros.data(), static_cast<std::streamsize>(zeros.size()));
  }
  Serve serve(dir, {"--disk-compression", "zstd:3"});
  auto c = serve.Connect();
  bool exact = false;
  CHECK(LoadPrompt(*c, ns, p, &exact) < 8);  // the load stops at the damaged block, a miss
  CHECK(exact);                        // never damaged bytes
  CHECK(LoadPrompt(*c, ns, more, &exact) == 4);
  CHECK(exact);
  nlohmann::json disk = StatsJson(*c)["disk"];
  INFO(disk.dump());
  CHECK(disk["corrupt_dropped"] == 1);
  CHECK(disk["blocks"] == 11);
  // Stored again: served whole and bit-exact.
  CHECK(*c->Store(ns, p.keys, p.in).Wait() >= 1);
  CHECK(LoadPrompt(*c, ns, p, &exact) == 8);
  CHECK(exact);
  Prompt fresh(ns, 4, 53, kBlockBytes);
  UseKvBytes(&fresh, 53);
  CHECK(*c->Store(ns, fresh.keys, fresh.in).Wait() == 4);
  CHECK(LoadPrompt(*c, ns, fresh, &exact) == 4);
  CHECK(exact);
  c.reset();
  CHECK(serve.Stop() == 0);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace strata
