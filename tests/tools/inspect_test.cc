// `strata inspect` and the /metrics endpoint against real processes: a `strata serve` with known
// contents (stored through the client library), the CLI run as a child process (its --json
// parsed, its exit codes checked), the offline inspector on the disk tier of a stopped daemon,
// and /metrics scraped with curl and parsed (docs/operations.md, "Inspector" and "Metrics").
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "client/channel.h"
#include "ipc/ipc_protocol.h"
#include "strata/client.h"
#include "strata/key_chain.h"
#include "tests/lib/client_test_util.h"
#include "tests/lib/disk_serve.h"
#include "tests/lib/run_command.h"
#include "tests/lib/scratch_files.h"
#include "tools/strata/serve_process.h"

namespace strata {
namespace {

using Serve = testing::DiskServe;
using nlohmann::json;
using testing::ReadFile;
using testing::ScratchDir;

// 2 layers x 2 planes x 2 heads x 32 dims x 2 bytes x 16 tokens = 8 KiB per block.
NamespaceSpec BaseSpec() {
  NamespaceSpec s;
  s.model_id = "test/inspect-model";
  s.num_layers = 2;
  s.num_kv_heads = 2;
  s.head_dim = 32;
  s.block_size = 16;
  return s;
}
// The same namespace as flags of `strata inspect prefix`.
std::string BaseFlags() {
  return "--model test/inspect-model --layers 2 --kv-heads 2 --head-dim 32 --block-size 16";
}
Namespace Make(const NamespaceSpec& s) { return std::move(Namespace::Create(s)).value(); }

struct Run {
  int code = -1;
  std::string out;
  json Json() const {
    INFO(out);
    return json::parse(out);
  }
};

// Runs a shell command; its stdout and exit code (stderr goes to ours).
Run Sh(const std::string& cmd) {
  const testing::CommandResult c = testing::RunCommand(cmd);
  return Run{c.exit_code, c.output};
}

Run Inspect(const std::string& args) {
  return Sh(std::string(STRATA_CLI_PATH) + " inspect " + args);
}

// `strata inspect <args>` once the funnel row of `ns` counts `loads` loads (its whole output),
// asked again for up to 5 s: a load through the load index reaches the daemon in an access
// notice the client sends about 10 ms later (docs/data-plane.md, "Loads without a round trip").
json FunnelWith(const std::string& args, const Namespace& ns, uint64_t loads) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (;;) {
    Run r = Inspect(args);
    json j = r.code == 0 ? r.Json() : json();
    if (j.is_object())
      for (const json& n : j["namespaces"])
        if (n["namespace"] == ns.id().ToHex() && n["loads"] == loads) return j;
    if (std::chrono::steady_clock::now() > until) return j;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void WriteTokens(const std::string& path, const std::vector<uint32_t>& tokens) {
  std::ofstream out(path);
  for (uint32_t t : tokens) out << t << "\n";
}

TEST_CASE("inspect a live daemon: node, namespaces, prefix, key, ls and exit codes",
          "[tools][inspect]") {
  const std::string dir = ScratchDir("live");
  Serve serve(dir);
  const Namespace ns = Make(BaseSpec());
  testing::Prompt p(ns, 8, 11, ns.block_bytes());
  auto c = serve.Connect();
  REQUIRE(*c->Store(ns, p.keys, p.in).Wait() == 8);
  const std::string s = "--socket " + serve.socket() + " ";

  Run node = Inspect(s + "--json node");
  REQUIRE(node.code == 0);
  json j = node.Json();
  CHECK(j["schema_version"] == 1);
  CHECK(j["source"] == "live");
  CHECK(j["health"] == "ok");
  CHECK(j["tiers"]["host"]["blocks"] == 8);
  CHECK(j["tiers"]["host"]["used_bytes"] == 8 * ns.block_bytes());
  CHECK(j["tiers"]["host"]["capacity_bytes"].get<uint64_t>() > 0);
  CHECK(j["tiers"]["disk"]["blocks"] == 0);
  CHECK(j["tiers"]["host"]["evictions_per_second"].is_null());  // one sample: unknown
  // 8 blocks of one size class fill part of one 16 MiB slab (the default host_slab): the rest of
  // the lent slab is the pool's fragmentation. The disk tier's is not measured.
  CHECK(j["tiers"]["host"]["fragmentation"].get<double>() ==
        Approx(1.0 - 8.0 * ns.block_bytes() / double(16 << 20)));
  CHECK(j["tiers"]["disk"]["fragmentation"].is_null());
  CHECK(j["pins"] == 0);
  Run human = Inspect(s + "node");
  CHECK(human.code == 0);
  CHECK(human.out.find("health ok") != std::string::npos);
  INFO(human.out);
  CHECK(std::regex_search(human.out, std::regex("\nhost +[0-9.]+ MiB +64\\.0 KiB +8 ")));

  Run nss = Inspect(s + "--json namespaces");
  REQUIRE(nss.code == 0);
  j = nss.Json();
  REQUIRE(j["namespaces"].size() == 1);
  const json& n0 = j["namespaces"][0];
  CHECK(n0["id"] == ns.id().ToHex());
  CHECK(n0["fingerprint"]["model_id"] == "test/inspect-model");
  CHECK(n0["fingerprint"]["key_scheme"] == "strata");
  CHECK(n0["fingerprint"]["salt_present"] == false);
  CHECK(n0["blocks"]["host"] == 8);
  CHECK(n0["bytes"]["host"] == 8 * ns.block_bytes());
  CHECK(n0["near_duplicates"].empty());

  // Six stored blocks and five tokens more: reach 6 everywhere, the tail never keyed.
  std::vector<uint32_t> tokens(p.tokens.begin(), p.tokens.begin() + 6 * 16 + 5);
  WriteTokens(dir + "/t1", tokens);
  Run pre = Inspect(s + "--json prefix --tokens " + dir + "/t1 " + BaseFlags());
  REQUIRE(pre.code == 0);
  j = pre.Json();
  CHECK(j["namespace"] == ns.id().ToHex());
  CHECK(j["keyed_blocks"] == 6);
  CHECK(j["reach"]["device"] == 0);
  CHECK(j["reach"]["host"] == 6);
  CHECK(j["reach"]["disk"] == 6);
  CHECK(j["reach"]["peers"].is_null());  // a single node: no peers to ask
  CHECK(j["reach_tokens"]["host"] == 96);
  CHECK(j["blocks"][0]["key"] == p.keys[0].ToHex());
  CHECK(j["blocks"][0]["tiers"] == json::array({"host"}));
  CHECK(j["blocks"][0]["bytes"] == ns.block_bytes());
  CHECK(j["blocks"][0]["age_s"].is_number());  // stored by this daemon: its age is known
  CHECK(j["blocks"][0]["hits"] == 0);          // no lookup yet
  CHECK(j["first_miss"]["reason"] == "partial_block");
  CHECK(j["first_miss"]["index"] == 6);

  // All eight and eight unknown blocks: the first miss is block 8, absent.
  tokens.assign(p.tokens.begin(), p.tokens.end());
  for (uint32_t i = 0; i < 8 * 16; ++i) tokens.push_back(200000 + i);
  WriteTokens(dir + "/t2", tokens);
  j = Inspect(s + "--json prefix --tokens " + dir + "/t2 " + BaseFlags()).Json();
  CHECK(j["reach"]["host"] == 8);
  CHECK(j["first_miss"]["index"] == 8);
  CHECK(j["first_miss"]["reason"] == "absent");
  CHECK(j["blocks"][8]["tiers"].empty());
  CHECK(j["blocks"][8]["bytes"].is_null());
  human = Inspect(s + "prefix --tokens " + dir + "/t2 " + BaseFlags());
  CHECK(human.code == 0);
  CHECK(human.out.find("first miss: block 8") != std::string::npos);

  Run key = Inspect(s + "--json key " + p.keys[3].ToHex());
  REQUIRE(key.code == 0);
  j = key.Json();
  CHECK(j["found"] == true);
  CHECK(j["tiers"] == json::array({"host"}));
  CHECK(j["header"]["namespace"] == ns.id().ToHex());
  CHECK(j["header"]["payload_length"] == ns.block_bytes());
  CHECK(j["checksum_verified"] == true);
  CHECK(j["fingerprint"]["model_id"] == "test/inspect-model");

  Run ls = Inspect(s + "--json ls --limit 3 --sort key");
  REQUIRE(ls.code == 0);
  j = ls.Json();
  CHECK(j["total"] == 8);
  CHECK(j["truncated"] == true);
  REQUIRE(j["blocks"].size() == 3);
  CHECK(j["blocks"][0]["key"].get<std::string>() < j["blocks"][1]["key"].get<std::string>());
  j = Inspect(s + "--json ls --tier disk").Json();
  CHECK(j["total"] == 0);
  Run verify = Inspect(s + "--json verify");  // nothing on disk yet
  CHECK(verify.code == 0);
  CHECK(verify.Json()["checked"] == 0);
  CHECK(verify.Json()["dropped"] == true);

  // A cleared namespace: the miss says so.
  REQUIRE(*c->Clear(ns.id()) == 8);
  j = Inspect(s + "--json prefix --tokens " + dir + "/t2 " + BaseFlags()).Json();
  CHECK(j["reach"]["host"] == 0);
  CHECK(j["first_miss"]["reason"] == "cleared");
  CHECK(j["first_miss"]["at_unix_ms"].get<int64_t>() > 0);

  // --watch: one answer per refresh; the second knows the eviction rate.
  Run watch = Inspect(s + "--json --watch 0.2 --watch-count 2 node");
  CHECK(watch.code == 0);
  std::istringstream lines(watch.out);
  std::string first, second;
  std::getline(lines, first);
  std::getline(lines, second);
  CHECK(json::parse(first)["tiers"]["host"]["evictions_per_second"].is_null());
  CHECK(json::parse(second)["tiers"]["host"]["evictions_per_second"] == 0.0);

  // Exit codes: 1 unreachable, 2 usage.
  CHECK(Inspect("--socket " + dir + "/nowhere.sock node 2>/dev/null").code == 1);
  CHECK(Inspect(s + "key not-a-key 2>/dev/null").code == 2);
  CHECK(Inspect(s + "--no-such-flag node 2>/dev/null").code == 2);
  CHECK(Inspect(s + "--socket x --data-dir y node 2>/dev/null").code == 2);
}

TEST_CASE("inspect flags namespaces that differ in one field and names them as the miss reason",
          "[tools][inspect]") {
  const std::string dir = ScratchDir("mismatch");
  Serve serve(dir);
  const Namespace a = Make(BaseSpec());
  NamespaceSpec rev = BaseSpec();
  rev.model_revision = "rev-2";
  const Namespace b = Make(rev);
  NamespaceSpec vllm = BaseSpec();
  vllm.key_scheme = KeyScheme::kVllmSha256Cbor;
  const Namespace v = Make(vllm);
  testing::Prompt p(a, 4, 21, a.block_bytes());
  testing::Prompt other(b, 2, 22, b.block_bytes());
  auto c = serve.Connect();
  REQUIRE(*c->Store(a, p.keys, p.in).Wait() == 4);
  REQUIRE(*c->Store(b, other.keys, other.in).Wait() == 2);
  const std::string s = "--socket " + serve.socket() + " ";

  Run nss = Inspect(s + "--json namespaces");
  CHECK(nss.code == 3);  // near-duplicates found
  json j = nss.Json();
  CHECK(j["flagged"] == 2);
  for (const json& n : j["namespaces"]) {
    REQUIRE(n["near_duplicates"].size() == 1);
    CHECK(n["near_duplicates"][0]["differences"][0].get<std::string>().rfind("model_revision",
                                                                              0) == 0);
  }
  Run human = Inspect(s + "namespaces");
  CHECK(human.code == 3);
  CHECK(human.out.find("NEAR-DUPLICATE") != std::string::npos);

  // The engine asks with revision rev-2 for tokens cached under the first namespace.
  WriteTokens(dir + "/t", p.tokens);
  Run pre = Inspect(s + "--json prefix --tokens " + dir + "/t " + BaseFlags() +
                    " --revision rev-2");
  CHECK(pre.code == 3);
  j = pre.Json();
  CHECK(j["reach"]["host"] == 0);
  CHECK(j["first_miss"]["reason"] == "namespace_mismatch");
  CHECK(j["first_miss"]["other_namespace"]["id"] == a.id().ToHex());
  CHECK(j["first_miss"]["other_namespace"]["reach_tokens"] == 64);
  const json& diffs = j["first_miss"]["other_namespace"]["differences"];
  REQUIRE(diffs.size() == 1);
  CHECK(diffs[0].get<std::string>().rfind("model_revision", 0) == 0);

  // The same tokens keyed with vLLM's scheme: a key-scheme mismatch.
  j = Inspect(s + "--json prefix --tokens " + dir + "/t " + BaseFlags() +
              " --key-scheme vllm-sha256-cbor")
          .Json();
  CHECK(j["first_miss"]["reason"] == "key_scheme_mismatch");
  CHECK(j["first_miss"]["other_namespace"]["id"] == a.id().ToHex());
  (void)v;

  // A salt is never shown, only that it differs.
  NamespaceSpec salted = BaseSpec();
  salted.tenant_salt = "secret-salt-123";
  const Namespace t = Make(salted);
  testing::Prompt tp(t, 1, 23, t.block_bytes());
  REQUIRE(*c->Store(t, tp.keys, tp.in).Wait() == 1);
  Run all = Inspect(s + "--json namespaces");
  CHECK(all.out.find("secret-salt-123") == std::string::npos);
  CHECK(all.out.find("tenant_salt: differs") != std::string::npos);
}

TEST_CASE("inspect offline: the disk tier of a stopped daemon, RocksDB read-only",
          "[tools][inspect]") {
  const std::string dir = ScratchDir("offline");
  const Namespace ns = Make(BaseSpec());
  testing::Prompt p(ns, 8, 31, ns.block_bytes());
  {
    Serve serve(dir);
    auto c = serve.Connect();
    REQUIRE(*c->Store(ns, p.keys, p.in).Wait() == 8);
    c.reset();
    REQUIRE(serve.Stop() == 0);  // a clean stop writes the host blocks to disk
  }
  const std::string d = "--data-dir " + dir + "/data ";
  Run node = Inspect(d + "--json node");
  REQUIRE(node.code == 0);
  json j = node.Json();
  CHECK(j["source"] == "offline");
  CHECK(j["health"] == "ok");
  CHECK(j["tiers"]["disk"]["blocks"] == 8);
  CHECK(j["tiers"]["disk"]["used_bytes"] == 8 * ns.block_bytes());
  CHECK(j["tiers"]["disk"]["capacity_bytes"].is_null());
  CHECK(j["uptime_s"].is_null());

  j = Inspect(d + "--json namespaces").Json();
  REQUIRE(j["namespaces"].size() == 1);
  CHECK(j["namespaces"][0]["fingerprint"]["model_id"] == "test/inspect-model");
  CHECK(j["namespaces"][0]["blocks"]["disk"] == 8);

  WriteTokens(dir + "/t", p.tokens);
  j = Inspect(d + "--json prefix --tokens " + dir + "/t " + BaseFlags()).Json();
  CHECK(j["source"] == "offline");
  CHECK(j["reach"]["host"] == 0);
  CHECK(j["reach"]["disk"] == 8);
  CHECK(j["first_miss"].is_null());

  Run key = Inspect(d + "--json key " + p.keys[5].ToHex());
  REQUIRE(key.code == 0);
  CHECK(key.Json()["checksum_verified"] == true);
  CHECK(Inspect(d + "--json ls").Json()["total"] == 8);
  Run clean = Inspect(d + "--json verify");
  CHECK(clean.code == 0);
  CHECK(clean.Json()["ok"] == 8);

  // A flipped payload byte: `key` finds the block fails its checksum (exit 3).
  {
    std::fstream f(dir + "/data/blocks.data", std::ios::in | std::ios::out | std::ios::binary);
    REQUIRE(f);
    for (std::streamoff off = 100; off < 8 * 65536; off += 4096) {
      f.seekg(off);
      char ch = 0;
      if (!f.get(ch)) break;
      f.seekp(off);
      f.put(static_cast<char>(ch ^ 0x5a));
    }
  }
  size_t failed = 0;
  for (const BlockKey& k : p.keys) {
    Run r = Inspect(d + "--json key " + k.ToHex());
    if (r.code == 3) {
      CHECK(r.Json()["checksum_verified"] == false);
      ++failed;
    }
  }
  CHECK(failed == 8);
  Run verify = Inspect(d + "--json verify");
  CHECK(verify.code == 3);
  j = verify.Json();
  CHECK(j["checked"] == 8);
  CHECK(j["corrupt"] == 8);
  CHECK(j["dropped"] == false);
  CHECK(j["corrupt_keys"].size() == 8);
  CHECK(Inspect("--data-dir " + dir + "/nothing node 2>/dev/null").code == 1);
}

TEST_CASE("inspect top funnel doctor and prefix age/hits/in_flight against known traffic",
          "[tools][inspect]") {
  const std::string dir = ScratchDir("traffic");
  Serve serve(dir);
  const Namespace ns = Make(BaseSpec());
  testing::Prompt p(ns, 8, 51, ns.block_bytes());
  auto c = serve.Connect();
  REQUIRE(*c->Store(ns, p.keys, p.in).Wait() == 8);
  const std::string s = "--socket " + serve.socket() + " ";
  const std::span<const BlockKey> all(p.keys), head = all.first(4);

  // Before any lookup: no block was found yet; a fresh block is 0 hits old, its age known.
  json j = Inspect(s + "--json top").Json();
  CHECK(j["prefixes"].empty());

  // 3 lookups of the whole chain and 2 more of its first 4 blocks: blocks 0-3 have 5 hits,
  // 4-7 have 3. One lookup of unknown keys (a miss, attributed to no namespace).
  for (int i = 0; i < 3; ++i) REQUIRE(c->Lookup(all)->matched_blocks == 8);
  for (int i = 0; i < 2; ++i) REQUIRE(c->Lookup(head)->matched_blocks == 4);
  std::vector<uint32_t> other(3 * 16);
  for (size_t i = 0; i < other.size(); ++i) other[i] = 400000 + static_cast<uint32_t>(i);
  REQUIRE(c->Lookup(ComputeBlockKeys(ns, other))->matched_blocks == 0);

  Run top = Inspect(s + "--json top");
  REQUIRE(top.code == 0);
  j = top.Json();
  REQUIRE(j["prefixes"].size() == 2);
  CHECK(j["prefixes"][0]["hits"] == 5);
  CHECK(j["prefixes"][0]["blocks"] == 4);
  CHECK(j["prefixes"][0]["tokens"] == 64);
  CHECK(j["prefixes"][0]["first_key"] == p.keys[0].ToHex());
  CHECK(j["prefixes"][0]["last_key"] == p.keys[3].ToHex());
  CHECK(j["prefixes"][0]["namespace"] == ns.id().ToHex());
  CHECK(j["prefixes"][1]["hits"] == 3);
  CHECK(j["prefixes"][1]["blocks"] == 8);
  CHECK(j["prefixes"][1]["last_key"] == p.keys[7].ToHex());
  CHECK(j["prefixes"][1]["last_access_unix_ms"].get<int64_t>() > 0);
  Run human = Inspect(s + "top --limit 1");
  INFO(human.out);
  CHECK(std::regex_search(human.out, std::regex("\n +1  [0-9a-f]{12}  [0-9a-f]{12}  [0-9a-f]{12} +4 +64 +5  ")));

  // prefix: per-block hits and age.
  WriteTokens(dir + "/t", p.tokens);
  j = Inspect(s + "--json prefix --tokens " + dir + "/t " + BaseFlags()).Json();
  CHECK(j["blocks"][0]["hits"] == 5);
  CHECK(j["blocks"][3]["hits"] == 5);
  CHECK(j["blocks"][4]["hits"] == 3);
  CHECK(j["blocks"][7]["hits"] == 3);
  CHECK(j["blocks"][0]["age_s"].get<double>() >= 0);
  CHECK(j["blocks"][0]["age_s"].get<double>() < 120);
  j = Inspect(s + "--json key " + p.keys[2].ToHex()).Json();
  CHECK(j["hits"] == 5);
  CHECK(j["last_access_unix_ms"].get<int64_t>() > 0);

  // One load of the 8 blocks: the funnel follows each stage exactly.
  testing::Outputs out(8, ns.block_bytes());
  REQUIRE(*c->Load(ns, p.keys, out.out).Wait() == 8);
  Run funnel = Inspect(s + "--json funnel --window 600");
  REQUIRE(funnel.code == 0);
  j = funnel.Json();
  CHECK(j["window_s"] == 600.0);
  CHECK(j["recompute_tokens_per_second"].is_null());
  json mine, unattributed;
  for (const json& n : j["namespaces"]) {
    if (n["namespace"] == ns.id().ToHex()) mine = n;
    if (n["namespace"] == "unattributed") unattributed = n;
  }
  REQUIRE(mine.is_object());
  const uint64_t lookups = mine["lookups"].get<uint64_t>();  // ours, and any the load made
  CHECK(lookups >= 5);
  CHECK(mine["lookup_blocks"].get<uint64_t>() == 3 * 8 + 2 * 4 + (lookups - 5) * 8);
  CHECK(mine["found"]["host"] == mine["lookup_blocks"]);
  CHECK(mine["found"]["disk"] == 0);
  CHECK(mine["found"]["peers"] == 0);
  CHECK(mine["loads"] == 1);
  CHECK(mine["loaded_blocks"] == 8);
  CHECK(mine["loaded_before_deadline_blocks"] == 8);
  CHECK(mine["faster_than_recompute_blocks"].is_null());  // no rate: unknown, not 0
  CHECK(mine["net_benefit_seconds"].is_null());
  REQUIRE(unattributed.is_object());
  CHECK(unattributed["lookups"] == 1);
  CHECK(unattributed["lookup_blocks"] == 3);
  CHECK(unattributed["found_blocks"] == 0);
  // At 1 token per second, 128 tokens take 128 s to recompute: the load is faster.
  j = Inspect(s + "--json funnel --recompute-tps 1").Json();
  for (const json& n : j["namespaces"])
    if (n["namespace"] == ns.id().ToHex()) mine = n;
  CHECK(j["recompute_rate_source"] == "query");
  CHECK(mine["recompute_rate_source"] == "query");
  CHECK(mine["faster_than_recompute_blocks"] == 8);
  CHECK(mine["net_benefit_seconds"].get<double>() > 127.0);
  CHECK(mine["net_benefit_seconds"].get<double>() <= 128.0);
  human = Inspect(s + "funnel --recompute-tps 1");
  INFO(human.out);
  CHECK(human.code == 0);
  CHECK(human.out.find("recompute 1.0 tokens/s (query)") != std::string::npos);

  // A store begun and not committed: the prefix misses "in flight".
  std::vector<uint32_t> tokens = p.tokens;
  for (uint32_t i = 0; i < 2 * 16; ++i) tokens.push_back(500000 + i);
  const std::vector<BlockKey> longer = ComputeBlockKeys(ns, tokens);
  REQUIRE(longer.size() == 10);
  auto raw = SocketChannel::Open(serve.socket(), 5000, 1 << 20);
  REQUIRE(raw.ok());
  auto begun = (*raw)->Call(ipc::StoreBeginRequest{ns.id(), {longer[8], longer[9]},
                                                   {ns.block_bytes(), ns.block_bytes()}});
  REQUIRE(begun.ok());
  WriteTokens(dir + "/t2", tokens);
  j = Inspect(s + "--json prefix --tokens " + dir + "/t2 " + BaseFlags()).Json();
  CHECK(j["reach"]["host"] == 8);
  CHECK(j["first_miss"]["index"] == 8);
  CHECK(j["first_miss"]["reason"] == "in_flight");
  CHECK(j["first_miss"]["since_unix_ms"].get<int64_t>() > 0);

  // doctor: one namespace of 8 KiB blocks, a disk tier of 64 MiB, no cluster.
  Run doctor = Inspect(s + "--json doctor");
  INFO(doctor.out);
  REQUIRE(doctor.code == 0);
  j = doctor.Json();
  std::map<std::string, json> checks;
  for (const json& k : j["checks"]) checks[k["name"].get<std::string>()] = k;
  CHECK(checks["key_scheme_reproducible"]["status"] == "pass");
  CHECK(checks["block_size_alignment"]["status"] == "pass");
  CHECK(checks["disk_space"]["status"] == "pass");
  CHECK(checks["disk_space"]["detail"].get<std::string>().rfind("bound 64.0 MiB", 0) == 0);
  CHECK(checks["etcd_reachable"]["status"] == "skip");
  CHECK(checks["version_skew"]["status"] == "skip");
  CHECK(checks["clock_skew"]["status"] == "skip");
  CHECK(checks.count("memlock_limit") == 1);
  CHECK(checks.count("shared_memory") == 1);
  CHECK(j["summary"]["fail"] == 0);
  // Two engines of one model keyed with different vLLM seeds, and a layout whose blocks are not
  // a multiple of 4 KiB: fail (exit 3) and warn, each with its fix.
  NamespaceSpec v1 = BaseSpec();
  v1.key_scheme = KeyScheme::kVllmSha256Cbor;
  v1.hash_seed = "1";
  NamespaceSpec v2 = v1;
  v2.hash_seed = "2";
  NamespaceSpec odd = BaseSpec();
  odd.head_dim = 24;  // 6 KiB blocks
  for (const NamespaceSpec& spec : {v1, v2, odd}) {
    const Namespace n = Make(spec);
    testing::Prompt q(n, 1, 52, n.block_bytes());
    REQUIRE(*c->Store(n, q.keys, q.in).Wait() == 1);
  }
  doctor = Inspect(s + "--json doctor");
  CHECK(doctor.code == 3);
  checks.clear();
  j = doctor.Json();
  for (const json& k : j["checks"]) checks[k["name"].get<std::string>()] = k;
  CHECK(checks["key_scheme_reproducible"]["status"] == "fail");
  CHECK(checks["key_scheme_reproducible"]["fix"].get<std::string>().find("PYTHONHASHSEED") !=
        std::string::npos);
  CHECK(checks["block_size_alignment"]["status"] == "warn");
  CHECK(checks["block_size_alignment"]["detail"].get<std::string>().find("6144 bytes") !=
        std::string::npos);
  human = Inspect(s + "doctor");
  INFO(human.out);
  CHECK(human.code == 3);
  CHECK(human.out.find("FAIL  key_scheme_reproducible") != std::string::npos);

  // peers on a single node; the cluster-only commands refuse --data-dir.
  j = Inspect(s + "--json peers").Json();
  CHECK(j["clustered"] == false);
  CHECK(j["members"].empty());
  CHECK(Inspect("--data-dir " + serve.data() + " peers 2>/dev/null").code == 1);
  // --all on a single node: that node alone.
  Run one = Inspect(s + "--all --json node");
  CHECK(one.code == 0);
  CHECK(one.Json()["node"]["reachable"] == true);
}

// Prometheus text: sample name with labels -> value.
TEST_CASE("inspect funnel weighs loads against the engine's reported rate, else the configured one",
          "[tools][inspect]") {
  const std::string dir = ScratchDir("recompute");
  Serve serve(dir, {"--recompute-tps", "1000"});
  const std::string s = "--socket " + serve.socket() + " ";
  const Namespace ns = Make(BaseSpec());
  testing::Prompt p(ns, 8, 71, ns.block_bytes());
  auto c = serve.Connect();
  REQUIRE(*c->Store(ns, p.keys, p.in).Wait() == 8);
  testing::Outputs out(8, ns.block_bytes());
  auto mine = [&](const json& j) {
    for (const json& n : j["namespaces"])
      if (n["namespace"] == ns.id().ToHex()) return n;
    return json();
  };

  // No rate reported: the node's configured 1000 tokens/s (128 tokens: 0.128 s to recompute).
  REQUIRE(*c->Load(ns, p.keys, out.out).Wait() == 8);
  json j = Inspect(s + "--json funnel").Json();
  CHECK(j["recompute_tokens_per_second"] == 1000.0);
  CHECK(j["recompute_rate_source"] == "configured");
  json n = mine(j);
  REQUIRE(n.is_object());
  CHECK(n["recompute_rate_source"] == "configured");
  CHECK(n["recompute_tokens_per_second"] == 1000.0);
  const double first_benefit = n["net_benefit_seconds"].get<double>();
  CHECK(first_benefit <= 0.128);
  CHECK(first_benefit > 0.128 - n["load_seconds"].get<double>() - 1e-9);

  // The engine reports 2 tokens/s: its next load is weighed against 64 s of recomputing.
  CHECK(c->SetRecomputeRate(ns, 0).code() == StatusCode::kInvalidArgument);
  CHECK(c->SetRecomputeRate(ns, std::numeric_limits<double>::infinity()).code() ==
        StatusCode::kInvalidArgument);
  REQUIRE(c->SetRecomputeRate(ns, 2).ok());
  REQUIRE(*c->Load(ns, p.keys, out.out).Wait() == 8);
  n = mine(FunnelWith(s + "--json funnel", ns, 2));
  CHECK(n["loads"] == 2);
  CHECK(n["recompute_rate_source"] == "mixed");  // one load at the configured rate, one at 2
  CHECK(n["recompute_tokens_per_second"] == 2.0);
  // 8 at 2 tokens/s, and 8 more unless the first load took over 0.128 s (a loaded machine).
  CHECK(n["faster_than_recompute_blocks"].get<uint64_t>() >= 8);
  const double benefit = n["net_benefit_seconds"].get<double>();
  CHECK(benefit > 64.0 + 0.128 - n["load_seconds"].get<double>() - 1e-9);
  CHECK(benefit <= 64.128);
  // A window holding only the engine-rated load: its source alone.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  REQUIRE(*c->Load(ns, p.keys, out.out).Wait() == 8);
  n = mine(FunnelWith(s + "--json funnel --window 1", ns, 1));
  CHECK(n["loads"] == 1);
  CHECK(n["recompute_rate_source"] == "engine");
  CHECK(n["faster_than_recompute_blocks"] == 8);
}

TEST_CASE("inspect funnel without any rate reports the benefit as unknown (null, never 0)",
          "[tools][inspect]") {
  const std::string dir = ScratchDir("norate");
  Serve serve(dir);
  const Namespace ns = Make(BaseSpec());
  testing::Prompt p(ns, 2, 73, ns.block_bytes());
  auto c = serve.Connect();
  REQUIRE(*c->Store(ns, p.keys, p.in).Wait() == 2);
  testing::Outputs out(2, ns.block_bytes());
  REQUIRE(*c->Load(ns, p.keys, out.out).Wait() == 2);
  json j = Inspect("--socket " + serve.socket() + " --json funnel").Json();
  CHECK(j["recompute_tokens_per_second"].is_null());
  CHECK(j["recompute_rate_source"].is_null());
  for (const json& n : j["namespaces"]) {
    CHECK(n["faster_than_recompute_blocks"].is_null());
    CHECK(n["net_benefit_seconds"].is_null());
    CHECK(n["recompute_rate_source"].is_null());
  }
}

// Stores `p` 32 blocks (4 MiB) per call, each call a prompt of its own for the pool.
void StoreInParts(Client& c, const Namespace& ns, const testing::Prompt& p) {
  for (size_t i = 0; i < p.keys.size(); i += 32) {
    const size_t n = std::min<size_t>(32, p.keys.size() - i);
    auto keys = std::span(p.keys).subspan(i, n);
    auto in = std::span(p.in).subspan(i, n);
    auto stored = c.Store(ns, keys, in).Wait();
    INFO(stored.status().ToString());
    REQUIRE(stored.ok());
  }
}

TEST_CASE("inspect prefix dates a block's eviction from the disk tier, not its earlier demotion",
          "[tools][inspect]") {
  const std::string dir = ScratchDir("disk-evicted");
  {
    std::ofstream(dir + "/c.yaml") << "write_through: true\n";
  }
  // LRU on both tiers (the disk follows the host's policy): A goes first from each.
  Serve serve(dir, {"--config", dir + "/c.yaml", "--eviction-policy", "lru"}, "128MiB", "32MiB");
  NamespaceSpec spec = BaseSpec();  // 2 layers x 2 x 8 heads x 128 dims x 2 bytes x 16 = 128 KiB
  spec.num_kv_heads = 8;
  spec.head_dim = 128;
  const Namespace ns = Make(spec);
  auto c = serve.Connect();
  const std::string s = "--socket " + serve.socket() + " ";
  testing::Prompt a(ns, 4, 501, ns.block_bytes());
  REQUIRE(*c->Store(ns, a.keys, a.in).Wait() == 4);
  WriteTokens(dir + "/a", a.tokens);
  const std::string prefix_a = s + "--json prefix --tokens " + dir + "/a " +
                               "--model test/inspect-model --layers 2 --kv-heads 8 "
                               "--head-dim 128 --block-size 16";
  // 300 more blocks (37.5 MiB) push A out of the 32 MiB host; write-through kept it on disk.
  testing::Prompt b1(ns, 300, 502, ns.block_bytes());
  StoreInParts(*c, ns, b1);
  json j = Inspect(prefix_a).Json();
  REQUIRE(j["reach"]["host"] == 0);
  REQUIRE(j["reach"]["disk"] == 4);
  // Later, 800 more (100 MiB) fill the 128 MiB disk tier past A: A leaves the node now.
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  const int64_t before_disk_eviction = std::chrono::duration_cast<std::chrono::milliseconds>(
                                           std::chrono::system_clock::now().time_since_epoch())
                                           .count();
  testing::Prompt b2(ns, 800, 503, ns.block_bytes());
  StoreInParts(*c, ns, b2);
  j = Inspect(prefix_a).Json();
  INFO(j.dump());
  CHECK(j["reach"]["disk"] == 0);
  CHECK(j["first_miss"]["index"] == 0);
  CHECK(j["first_miss"]["reason"] == "evicted");
  CHECK(j["first_miss"]["at_unix_ms"].get<int64_t>() >= before_disk_eviction);
}

TEST_CASE("inspect verify --drop removes the corrupt block offline, the daemon serves the rest",
          "[tools][inspect]") {
  const std::string dir = ScratchDir("drop");
  const Namespace ns = Make(BaseSpec());
  testing::Prompt p(ns, 8, 77, ns.block_bytes());
  {
    Serve serve(dir);
    auto c = serve.Connect();
    REQUIRE(*c->Store(ns, p.keys, p.in).Wait() == 8);
    c.reset();
    REQUIRE(serve.Stop() == 0);  // a clean stop writes the host blocks to disk
  }
  const std::string d = "--data-dir " + dir + "/data ";
  REQUIRE(Inspect(d + "--json verify").Json()["ok"] == 8);
  // One flipped byte in the block at the start of blocks.data (blocks are 8 KiB extents).
  {
    std::fstream f(dir + "/data/blocks.data", std::ios::in | std::ios::out | std::ios::binary);
    REQUIRE(f);
    f.seekg(100);
    char ch = 0;
    REQUIRE(f.get(ch));
    f.seekp(100);
    f.put(static_cast<char>(ch ^ 0x5a));
  }
  // Piped (not a terminal): no progress bar on stderr.
  Run found = Sh(std::string(STRATA_CLI_PATH) + " inspect " + d + "--json verify 2>&1");
  CHECK(found.code == 3);
  CHECK(found.out.find('\r') == std::string::npos);
  json j = found.Json();
  CHECK(j["checked"] == 8);
  CHECK(j["corrupt"] == 1);
  CHECK(j["dropped"] == false);
  REQUIRE(j["corrupt_keys"].size() == 1);
  const std::string bad = j["corrupt_keys"][0].get<std::string>();

  Run drop = Inspect(d + "--json verify --drop");
  CHECK(drop.code == 3);  // it found a corrupt block (and removed it)
  j = drop.Json();
  CHECK(j["corrupt"] == 1);
  CHECK(j["dropped"] == true);
  CHECK(j["dropped_blocks"] == 1);
  Run again = Inspect(d + "--json verify");
  CHECK(again.code == 0);
  CHECK(again.Json()["checked"] == 7);
  CHECK(again.Json()["corrupt"] == 0);
  CHECK(Inspect(d + "--json key " + bad).Json()["found"] == false);
  std::string human = Inspect(d + "verify").out;
  CHECK(human.find("verified 7 disk blocks: 7 ok, 0 corrupt") != std::string::npos);

  // The daemon restarts on the directory and serves the seven intact blocks, each on its own.
  Serve serve(dir);
  auto c = serve.Connect();
  size_t served = 0;
  for (size_t i = 0; i < p.keys.size(); ++i) {
    testing::Outputs one(1, ns.block_bytes());
    const size_t n = *c->Load(ns, std::span(p.keys).subspan(i, 1), one.out).Wait();
    if (p.keys[i].ToHex() == bad) {
      CHECK(n == 0);
      continue;
    }
    REQUIRE(n == 1);
    CHECK(one.bufs[0] == p.blocks[i]);
    ++served;
  }
  CHECK(served == 7);
  // --drop while a daemon holds the directory: refused (exit 1) with the way out; the daemon
  // goes on serving.
  {
    std::fstream f(dir + "/data/blocks.data", std::ios::in | std::ios::out | std::ios::binary);
    REQUIRE(f);
    f.seekg(3 * 8192 + 100);
    char ch = 0;
    REQUIRE(f.get(ch));
    f.seekp(3 * 8192 + 100);
    f.put(static_cast<char>(ch ^ 0x5a));
  }
  Run busy = Sh(std::string(STRATA_CLI_PATH) + " inspect " + d + "verify --drop 2>&1");
  INFO(busy.out);
  CHECK(busy.code == 1);
  CHECK(busy.out.find("a running daemon holds it") != std::string::npos);
  auto stats = c->Stats();
  CHECK(stats.ok());
}

std::map<std::string, double> Scrape(const std::string& url) {
  Run r = Sh("curl -sf " + url);
  REQUIRE(r.code == 0);
  std::map<std::string, double> out;
  std::istringstream in(r.out);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t sp = line.rfind(' ');
    REQUIRE(sp != std::string::npos);
    out[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
  }
  return out;
}

TEST_CASE("/metrics scraped with curl: counters follow a known workload exactly",
          "[tools][metrics]") {
  const std::string dir = ScratchDir("metrics");
  Serve serve(dir, {"--metrics-addr", "127.0.0.1:0"});
  const std::regex addr("metrics on (http://127\\.0\\.0\\.1:[0-9]+)/metrics");
  std::smatch m;
  // The daemon prints the metrics line after its socket answers: wait for it.
  std::string log = serve.Log();
  for (int i = 0; i < 200 && !std::regex_search(log, m, addr); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    log = serve.Log();
  }
  INFO(log);
  REQUIRE(std::regex_search(log, m, addr));
  const std::string base = m[1];
  CHECK(Sh("curl -sf " + base + "/healthz").out == "ok\n");
  CHECK(Sh("curl -sf " + base + "/readyz").out == "ready\n");
  CHECK(Sh("curl -s -o /dev/null -w '%{http_code}' " + base + "/nothing").out == "404");

  const Namespace ns = Make(BaseSpec());
  const std::string nsl = "namespace=\"" + ns.id().ToHex() + "\"";
  testing::Prompt p(ns, 4, 41, ns.block_bytes());
  // The load below is counted by its Load request: a client that maps the pool at connect would
  // serve it from the load index, and the daemon would count it only at the client's next notice.
  ClientOptions first_load;
  first_load.map_pool = ClientOptions::MapPool::kFirstLoad;
  auto c = serve.Connect(first_load);
  auto before = Scrape(base + "/metrics");
  CHECK(before["strata_tier_blocks{tier=\"host\"}"] == 0);
  CHECK(before["strata_client_sessions"] == 1);
  // The demotion staging counters are exported (zero: nothing has been evicted yet).
  for (const char* name : {"strata_demotions_dropped_total", "strata_demotion_waits_total",
                           "strata_demotion_wait_timeouts_total"}) {
    INFO(name);
    REQUIRE(before.count(name) == 1);
    CHECK(before[name] == 0);
  }

  REQUIRE(*c->Store(ns, p.keys, p.in).Wait() == 4);
  auto after_store = Scrape(base + "/metrics");
  CHECK(after_store["strata_tier_blocks{tier=\"host\"}"] == 4);
  CHECK(after_store["strata_tier_used_bytes{tier=\"host\"}"] == 4.0 * ns.block_bytes());
  CHECK(after_store["strata_namespace_stored_blocks_total{" + nsl + "}"] == 4);
  CHECK(after_store["strata_namespace_stored_bytes_total{" + nsl + "}"] ==
        4.0 * ns.block_bytes());
  CHECK(after_store["strata_request_bytes_total{request=\"store_commit\"}"] ==
        4.0 * ns.block_bytes());
  CHECK(after_store["strata_request_duration_seconds_count{request=\"store_commit\"}"] >= 1);

  // One lookup of 6 keys, 4 cached: 4 host hits and 2 misses, exactly.
  std::vector<BlockKey> keys = p.keys;
  std::vector<uint32_t> more(6 * 16);
  for (size_t i = 0; i < more.size(); ++i)
    more[i] = i < p.tokens.size() ? p.tokens[i] : 300000 + static_cast<uint32_t>(i);
  keys = ComputeBlockKeys(ns, more);
  const double lookups0 = after_store["strata_request_duration_seconds_count{request=\"lookup\"}"];
  auto found = c->Lookup(keys);
  REQUIRE(found.ok());
  REQUIRE(found->matched_blocks == 4);
  auto after_lookup = Scrape(base + "/metrics");
  CHECK(after_lookup["strata_request_duration_seconds_count{request=\"lookup\"}"] ==
        lookups0 + 1);
  CHECK(after_lookup["strata_tier_hits_total{tier=\"host\"}"] -
            after_store["strata_tier_hits_total{tier=\"host\"}"] == 4);
  CHECK(after_lookup["strata_lookup_blocks_total{outcome=\"miss\"}"] -
            after_store["strata_lookup_blocks_total{outcome=\"miss\"}"] == 2);
  CHECK(after_lookup["strata_request_duration_seconds_bucket{request=\"lookup\",le=\"+Inf\"}"] ==
        lookups0 + 1);

  testing::Outputs out(4, ns.block_bytes());
  REQUIRE(*c->Load(ns, p.keys, out.out).Wait() == 4);
  auto after_load = Scrape(base + "/metrics");
  CHECK(after_load["strata_request_bytes_total{request=\"load\"}"] == 4.0 * ns.block_bytes());
  CHECK(after_load["strata_namespace_served_blocks_total{" + nsl + "}"] == 4);
  CHECK(after_load["strata_tier_served_blocks_total{tier=\"host\"}"] == 4);
  CHECK(after_load["strata_tier_corrupt_dropped_total{tier=\"host\"}"] == 0);
  CHECK(after_load["strata_namespace_fingerprint_mismatches_total"] == 0);
  CHECK(after_load.count("strata_request_duration_seconds_sum{request=\"load\"}") == 1);
}

}  // namespace
}  // namespace strata
