// `strata serve`: the sidecar daemon. Settings: defaults < --config FILE < STRATA_* environment <
// flags (docs/config.md). Runs until SIGTERM or SIGINT, then stops accepting, disconnects clients,
// flushes the disk tier and exits 0.
#include <malloc.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <exception>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include <fmt/format.h>

#include "command_registry.h"
#include "daemon/config.h"
#include "daemon/daemon.h"
#include "daemon/inspect_http.h"
#include "daemon/log.h"
#include "daemon/metrics_server.h"
#include "node/node.h"

namespace strata::cli {
namespace {

// A flag that sets a setting of docs/config.md: its name, the setting's YAML key, its help.
struct SettingFlag {
  const char* flag;
  const char* key;
  const char* help;
};
constexpr SettingFlag kSettingFlags[] = {
    {"--socket", "socket", "Unix socket path [STRATA_SOCKET]"},
    {"--data-dir", "data_dir", "Disk tier directory [STRATA_DATA_DIR]"},
    {"--host-pool", "host_pool", "Host pool size, e.g. 8GiB or 8GB [STRATA_HOST_POOL]"},
    {"--host-slab", "host_slab",
     "Host pool slab size, the largest block it holds (default 16MiB) [STRATA_HOST_SLAB]"},
    {"--device-pool", "device_pool",
     "GPU memory for the device tier, e.g. 4GiB; CUDA builds with a GPU [STRATA_DEVICE_POOL]"},
    {"--device", "device", "CUDA device ordinal of the device tier (default 0) [STRATA_DEVICE]"},
    {"--disk", "disk", "Disk tier bound, e.g. 100GiB or 100GB [STRATA_DISK]"},
    {"--disk-compression", "disk_compression",
     "Compress disk tier payloads: none (default), lz4, zstd or zstd:LEVEL "
     "[STRATA_DISK_COMPRESSION]"},
    {"--disk-admission-min-frequency", "disk_admission_min_frequency",
     "Write a host victim to disk only when its key was seen this often: 0 (default) every victim, "
     "2 no one-hit wonders (fewer SSD writes, fewer hits), at most 15 "
     "[STRATA_DISK_ADMISSION_MIN_FREQUENCY]"},
    {"--eviction-policy", "eviction_policy",
     "learned (default), prefix, lru, arc, s3fifo, wtinylfu or gdsf [STRATA_EVICTION_POLICY]"},
    {"--recompute-tps", "recompute_tokens_per_second",
     "Engines' prefill tokens/s for `inspect funnel` when an engine reports none "
     "[STRATA_RECOMPUTE_TOKENS_PER_SECOND]"},
    {"--membership", "membership", "none, etcd or static [STRATA_MEMBERSHIP]"},
    {"--node-id", "node_id", "Node id in the cluster [STRATA_NODE_ID]"},
    {"--etcd", "etcd", "etcd URL; turns etcd membership on [STRATA_ETCD]"},
    {"--etcd-prefix", "etcd_prefix", "etcd key prefix [STRATA_ETCD_PREFIX]"},
    {"--etcd-lease-ttl", "etcd_lease_ttl_s", "etcd lease TTL in seconds [STRATA_ETCD_LEASE_TTL_S]"},
    {"--cluster-secret-file", "cluster_secret_file",
     "File holding the cluster secret [STRATA_CLUSTER_SECRET_FILE]"},
    {"--static-dir", "static_dir", "Shared directory for static membership [STRATA_STATIC_DIR]"},
    {"--static-peers", "static_peers",
     "Comma-separated peer ids for static membership [STRATA_STATIC_PEERS]"},
    {"--ucx-tls", "ucx_tls", "UCX transports, UCX_TLS syntax [STRATA_UCX_TLS]"},
    {"--listen-addr", "listen_addr",
     "Address whose interface peers reach this node on; * = all (default 127.0.0.1) "
     "[STRATA_LISTEN_ADDR]"},
    {"--request-timeout-ms", "request_timeout_ms",
     "Peer request timeout [STRATA_REQUEST_TIMEOUT_MS]"},
    {"--ucx-peer-errors", "ucx_peer_errors",
     "true: pulls over UCX endpoints with peer error handling (no shm) [STRATA_UCX_PEER_ERRORS]"},
    {"--pull-coalesce-bytes", "pull_coalesce_bytes",
     "Largest data message a pull asks for: small blocks travel several per message (default 0 "
     "= one block per message; e.g. 4MiB) [STRATA_PULL_COALESCE_BYTES]"},
    {"--pull-read-ahead", "pull_read_ahead",
     "true: a chunked Load's next chunk is pulled ahead on the fetch thread; false: never; "
     "auto (default): for holders whose blocks come as bytes, not mapped ones "
     "[STRATA_PULL_READ_AHEAD]"},
    {"--pull-on-lookup", "pull_on_lookup",
     "true: a Lookup that finds blocks only peers hold starts pulling the first of them at once "
     "(default false) [STRATA_PULL_ON_LOOKUP]"},
    {"--pull-mapped", "pull_mapped",
     "false: same-host pulls never map the holder's pool (default true: pidfd_getfd + one "
     "copy-and-checksum pass where allowed, else cma/UCX) [STRATA_PULL_MAPPED]"},
    {"--holder-memory-ms", "holder_memory_ms",
     "How long a remembered holder answers a Lookup without the directory (default 2000; 0: "
     "off) [STRATA_HOLDER_MEMORY_MS]"},
    {"--verify-loads", "verify_loads",
     "true: clients hash every block they load against its checksum (default false: the daemon "
     "verified it before publishing it) [STRATA_VERIFY_LOADS]"},
    {"--progress-spin-rounds", "progress_spin_rounds",
     "Empty rounds the UCX progress thread spins before sleeping; auto = 2000 with 4+ CPUs, "
     "else 0; -1 never sleeps [STRATA_PROGRESS_SPIN_ROUNDS]"},
    {"--kv-events", "kv_events",
     "Publish vLLM KV events of the host and disk tiers on this ZMQ PUB endpoint, e.g. "
     "tcp://*:5557 [STRATA_KV_EVENTS]"},
    {"--kv-events-replay", "kv_events_replay",
     "ZMQ ROUTER endpoint for KV-event replay, e.g. tcp://*:5558 [STRATA_KV_EVENTS_REPLAY]"},
    {"--kv-events-topic", "kv_events_topic", "Topic of KV events (default '') "
     "[STRATA_KV_EVENTS_TOPIC]"},
    {"--kv-events-replay-batches", "kv_events_replay_batches",
     "KV-event batches kept for replay (default 10000) [STRATA_KV_EVENTS_REPLAY_BATCHES]"},
    {"--kv-events-max-pending", "kv_events_max_pending",
     "KV events buffered before dropping (default 100000) [STRATA_KV_EVENTS_MAX_PENDING]"},
    {"--kv-events-batch-ms", "kv_events_batch_ms",
     "KV-event batching interval (default 10) [STRATA_KV_EVENTS_BATCH_MS]"},
    {"--kv-events-block-size", "kv_events_block_size",
     "block_size field of BlockStored (default 16) [STRATA_KV_EVENTS_BLOCK_SIZE]"},
    {"--kv-events-medium-host", "kv_events_medium_host",
     "medium of host-tier events (default CPU) [STRATA_KV_EVENTS_MEDIUM_HOST]"},
    {"--kv-events-medium-disk", "kv_events_medium_disk",
     "medium of disk-tier events (default STORAGE) [STRATA_KV_EVENTS_MEDIUM_DISK]"},
    {"--kv-events-medium-device", "kv_events_medium_device",
     "medium of device-tier events (default GPU) [STRATA_KV_EVENTS_MEDIUM_DEVICE]"},
    {"--kv-events-hash-format", "kv_events_hash_format",
     "int (vLLM's default) or bytes [STRATA_KV_EVENTS_HASH_FORMAT]"},
    {"--kv-events-encoding", "kv_events_encoding",
     "map (current vLLM) or array (vLLM before #42892) [STRATA_KV_EVENTS_ENCODING]"},
    {"--engine-events", "engine_events",
     "Follow engines' vLLM KV events: [NAME=]ENDPOINT[|REPLAY_ENDPOINT],... "
     "[STRATA_ENGINE_EVENTS]"},
};

struct ServeFlags {
  std::string config;
  bool no_disk = false;
  // Values and options of kSettingFlags, by index. A flag given with an empty value is applied
  // too (and refused where empty is not a value).
  std::vector<std::string> values = std::vector<std::string>(std::size(kSettingFlags));
  std::vector<CLI::Option*> options = std::vector<CLI::Option*>(std::size(kSettingFlags));
  // Trust and bounds (docs/operations.md); unset ones keep DaemonOptions' defaults.
  std::string socket_group;
  std::vector<uint32_t> allow_uids;
  std::vector<uint32_t> allow_gids;
  std::vector<uint32_t> admin_uids;
  std::vector<std::string> tenant_uids;  // SALT:UID
  std::vector<std::string> tenant_gids;  // SALT:GID
  std::optional<uint32_t> idle_timeout_ms;
  std::optional<uint32_t> max_clients_per_uid;
  std::optional<uint32_t> max_pin_ms;
  std::string metrics_addr;  // "" = no metrics endpoint
  std::string inspect_addr;  // "" = no inspect endpoint for other hosts
  std::string log_level = "warn";
  std::string log_format = "text";
};

// What peers on other hosts resolve this host by, for a wildcard --inspect-addr with
// listen_addr "*".
std::string ThisHostName() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  return buf;
}

// A --config that is not a regular file is a usage error naming the flag.
void CheckConfigFile(const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec) Fail("--config '" + path + "': " + ec.message(), 2);
  if (std::filesystem::is_directory(status))
    Fail("--config '" + path + "' is a directory; expected a YAML file", 2);
  if (!std::filesystem::is_regular_file(status))
    Fail("--config '" + path + "' is not a regular file", 2);
}

// Applies a repeatable trust flag, if given, as its setting (a comma-separated list).
template <typename T>
void ApplyListFlag(const std::vector<T>& values, const char* flag, const char* key,
                   ServeConfig* config) {
  if (values.empty()) return;
  std::string joined;
  for (const T& v : values) {
    if constexpr (std::is_same_v<T, std::string>) joined += (joined.empty() ? "" : ",") + v;
    else joined += (joined.empty() ? "" : ",") + std::to_string(v);
  }
  Status st = ApplySetting(key, joined, std::string("flag ") + flag, config);
  if (!st.ok()) Fail(st.ToString(), 2);
}

template <typename T>
void ApplyScalarFlag(const std::optional<T>& value, const char* flag, const char* key,
                     ServeConfig* config) {
  if (!value) return;
  Status st = ApplySetting(key, std::to_string(*value), std::string("flag ") + flag, config);
  if (!st.ok()) Fail(st.ToString(), 2);
}

void RunServe(const ServeFlags& f) {
  // Message bodies of 1 MiB and more (up to the 8 MiB frame cap) are mmapped and unmapped when
  // freed. glibc otherwise raises its mmap threshold after the first such free and serves later
  // large bodies from per-thread arenas that keep the memory: a burst of frames against the
  // receive budget then left 120-205 MiB of anonymous memory behind in the daemon for good.
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  // Everything the daemon creates is its own: the data directory 0700, its files 0600 (RocksDB
  // creates its index files 0644 less the umask, and its Env::SetAllowNonOwnerAccess does not
  // reach the file system in RocksDB 7.x). The socket and its directory set their modes
  // explicitly (--socket-group), as do the static membership files other nodes read.
  ::umask(077);
  // Block the stop signals before any thread starts, so that every thread inherits the mask and
  // only sigwait below sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  ServeConfig config;
  ConfigWarnings warnings;
  if (!f.config.empty()) {
    CheckConfigFile(f.config);
    Status st;
    try {
      st = ApplyConfigFile(f.config, &config, &warnings);
    } catch (const std::exception& e) {  // the YAML library throws on what it cannot convert
      st = Status::InvalidArgument("config '" + f.config + "': " + e.what());
    }
    if (!st.ok()) Fail(st.ToString(), 2);
  }
  if (Status st = ApplyEnvironment(StrataEnvironment(), &config, &warnings); !st.ok())
    Fail(st.ToString(), 2);
  for (size_t i = 0; i < std::size(kSettingFlags); ++i) {
    if (f.options[i]->count() == 0) continue;
    const SettingFlag& flag = kSettingFlags[i];
    Status st = ApplySetting(flag.key, f.values[i], std::string("flag ") + flag.flag, &config);
    if (!st.ok()) Fail(st.ToString(), 2);
  }
  if (f.no_disk) config.node.data_dir.clear();
  // The trust flags replace what the config file and the environment set (docs/config.md).
  if (!f.socket_group.empty()) {
    Status st = ApplySetting("socket_group", f.socket_group, "flag --socket-group", &config);
    if (!st.ok()) Fail(st.ToString(), 2);
  }
  ApplyListFlag(f.allow_uids, "--allow-uid", "allow_uids", &config);
  ApplyListFlag(f.allow_gids, "--allow-gid", "allow_gids", &config);
  ApplyListFlag(f.admin_uids, "--admin-uid", "admin_uids", &config);
  ApplyListFlag(f.tenant_uids, "--tenant-uid", "tenant_uids", &config);
  ApplyListFlag(f.tenant_gids, "--tenant-gid", "tenant_gids", &config);
  ApplyScalarFlag(f.idle_timeout_ms, "--idle-timeout-ms", "idle_timeout_ms", &config);
  ApplyScalarFlag(f.max_clients_per_uid, "--max-clients-per-uid", "max_clients_per_uid", &config);
  ApplyScalarFlag(f.max_pin_ms, "--max-pin-ms", "max_pin_ms", &config);
  if (Status st = FinishConfig(DetectHostResources(), &config, &warnings); !st.ok())
    Fail(st.ToString(), 2);
  for (const std::string& w : warnings) std::cerr << "strata serve: warning: " << w << std::endl;

  if (Status st = log::Configure(f.log_level, f.log_format); !st.ok())
    Fail("--log-level/--log-format: " + st.ToString(), 2);
  // Published in membership: `strata inspect --all` on this host reaches the node through it.
  if (!config.node.cluster.membership.empty()) {
    std::error_code ec;
    const std::string socket =
        config.daemon.socket_path.empty() ? ipc::DefaultSocketPath() : config.daemon.socket_path;
    const auto absolute = std::filesystem::absolute(socket, ec);
    config.node.cluster.inspect_socket = ec ? socket : absolute.string();
  }
  // Bound before the node joins membership, so that it publishes the port (0 picks one).
  std::unique_ptr<InspectServer> inspect;
  if (!f.inspect_addr.empty()) {
    const ClusterOptions& c = config.node.cluster;
    if (c.membership.empty())
      Fail("--inspect-addr serves the other members of a cluster; set a membership", 2);
    auto secret = LoadInspectSecret(c.secret, c.secret_file);
    if (!secret.ok()) Fail("--inspect-addr: " + secret.status().ToString(), 2);
    auto s = InspectServer::Start(f.inspect_addr, std::move(secret).value());
    if (!s.ok()) Fail("--inspect-addr: " + s.status().ToString(), 2);
    inspect = std::move(s).value();
    config.node.cluster.inspect_addr =
        inspect->PublishedAddress(c.listen_addr == "*" ? ThisHostName() : c.listen_addr);
  }
  auto node = Node::Open(config.node);
  if (!node.ok()) Fail(node.status().ToString());
  if (inspect) inspect->SetNode(node->get());
  auto daemon = Daemon::Start(node->get(), config.daemon);
  if (!daemon.ok()) Fail(daemon.status().ToString());
  std::cout << fmt::format("strata serve: listening on {} (host pool {} MiB, disk tier {})",
                           (*daemon)->socket_path(), (*node)->pool_bytes() >> 20,
                           config.node.data_dir.empty() ? "off" : config.node.data_dir)
            << std::endl;
  if (config.node.device_pool_bytes > 0)
    std::cout << fmt::format("strata serve: device tier {} MiB on CUDA device {}",
                             config.node.device_pool_bytes >> 20, config.node.device)
              << std::endl;
  if (!config.node.cluster.membership.empty())
    std::cout << fmt::format("strata serve: cluster node ({} membership, UCX on {})",
                             config.node.cluster.membership,
                             config.node.cluster.listen_addr == "*"
                                 ? std::string("every interface")
                                 : "the interface of " + config.node.cluster.listen_addr)
              << std::endl;

  std::atomic<bool> ready{true};
  std::unique_ptr<MetricsServer> metrics;
  if (!f.metrics_addr.empty()) {
    auto m = StartDaemonMetrics(f.metrics_addr, node->get(), daemon->get(), &ready);
    if (!m.ok()) Fail("--metrics-addr: " + m.status().ToString(), 2);
    metrics = std::move(m).value();
    std::cout << fmt::format("strata serve: metrics on http://{}:{}/metrics", metrics->host(),
                             metrics->port())
              << std::endl;
  }
  if (inspect)
    std::cout << fmt::format("strata serve: inspect endpoint on {} (cluster secret required)",
                             config.node.cluster.inspect_addr)
              << std::endl;

  int sig = 0;
  sigwait(&stop_signals, &sig);
  ready = false;
  std::cout << "strata serve: " << (sig == SIGTERM ? "SIGTERM" : "SIGINT")
            << ", shutting down" << std::endl;
  (*daemon)->Stop();
  if (inspect) inspect->Stop();
  Status flushed = (*node)->Flush();
  if (!flushed.ok()) Fail("flushing the disk tier: " + flushed.ToString());
  std::cout << "strata serve: stopped cleanly after " << (*daemon)->sessions_served()
            << " client sessions" << std::endl;
}

[[maybe_unused]] const bool kRegistered = RegisterCommand("", [](CLI::App& parent) {
  auto f = std::make_shared<ServeFlags>();
  auto* cmd = parent.add_subcommand("serve", "Run the sidecar cache daemon");
  cmd->add_option("--config", f->config, "YAML config file (docs/config.md)");
  for (size_t i = 0; i < std::size(kSettingFlags); ++i)
    f->options[i] = cmd->add_option(kSettingFlags[i].flag, f->values[i], kSettingFlags[i].help);
  cmd->add_flag("--no-disk", f->no_disk, "Run without a disk tier");
  cmd->add_option("--socket-group", f->socket_group,
                  "Group (name or gid) allowed to reach the socket: directory 0750, socket 0660");
  cmd->add_option("--allow-uid", f->allow_uids,
                  "Allow clients of this uid besides the daemon's own and root (repeatable)");
  cmd->add_option("--allow-gid", f->allow_gids,
                  "Allow clients in this group, primary or supplementary (repeatable)");
  cmd->add_option("--admin-uid", f->admin_uids,
                  "This uid may Clear every namespace and read node-wide Stats (repeatable)");
  cmd->add_option("--tenant-uid", f->tenant_uids,
                  "SALT:UID: namespaces of tenant salt SALT are private to this uid and the "
                  "others listed for SALT; their blocks live in slabs only they can map "
                  "(repeatable)");
  cmd->add_option("--tenant-gid", f->tenant_gids,
                  "SALT:GID: as --tenant-uid, for members of a group (repeatable)");
  cmd->add_option("--idle-timeout-ms", f->idle_timeout_ms,
                  "Disconnect a client idle this long; 0 = never (default 600000)");
  cmd->add_option("--max-clients-per-uid", f->max_clients_per_uid,
                  "Connections one uid may hold (default 64)");
  cmd->add_option("--max-pin-ms", f->max_pin_ms, "Longest pin a client may ask (default 60000)");
  cmd->add_option("--metrics-addr", f->metrics_addr,
                  "Serve /metrics, /healthz and /readyz on HOST:PORT (:PORT = loopback); "
                  "default: off");
  cmd->add_option("--inspect-addr", f->inspect_addr,
                  "Answer `strata inspect --all` from other hosts on HOST:PORT (HTTP, every "
                  "request authenticated with the cluster secret; published in membership); "
                  "default: off");
  cmd->add_option("--log-level", f->log_level,
                  "trace, debug (a line per request), info, warn (default), error or off");
  cmd->add_option("--log-format", f->log_format, "text (default) or json (one object a line)");
  cmd->callback([f] { RunServe(*f); });
});

}  // namespace
}  // namespace strata::cli
