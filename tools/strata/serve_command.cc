// `strata serve`: the sidecar daemon. Settings: defaults < --config FILE < STRATA_* environment <
// flags (docs/config.md). Runs until SIGTERM or SIGINT, then stops accepting, disconnects clients,
// flushes the disk tier and exits 0.
#include <signal.h>

#include <iostream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "command_registry.h"
#include "daemon/config.h"
#include "daemon/daemon.h"
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
    {"--disk", "disk", "Disk tier bound, e.g. 100GiB or 100GB [STRATA_DISK]"},
    {"--eviction-policy", "eviction_policy", "prefix or lru [STRATA_EVICTION_POLICY]"},
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
    {"--request-timeout-ms", "request_timeout_ms",
     "Peer request timeout [STRATA_REQUEST_TIMEOUT_MS]"},
};

struct ServeFlags {
  std::string config;
  bool no_disk = false;
  // Values and options of kSettingFlags, by index. A flag given with an empty value is applied
  // too (and refused where empty is not a value).
  std::vector<std::string> values = std::vector<std::string>(std::size(kSettingFlags));
  std::vector<CLI::Option*> options = std::vector<CLI::Option*>(std::size(kSettingFlags));
};

void RunServe(const ServeFlags& f) {
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
  if (!f.config.empty())
    if (Status st = ApplyConfigFile(f.config, &config, &warnings); !st.ok()) Fail(st.ToString(), 2);
  if (Status st = ApplyEnvironment(StrataEnvironment(), &config, &warnings); !st.ok())
    Fail(st.ToString(), 2);
  for (size_t i = 0; i < std::size(kSettingFlags); ++i) {
    if (f.options[i]->count() == 0) continue;
    const SettingFlag& flag = kSettingFlags[i];
    Status st = ApplySetting(flag.key, f.values[i], std::string("flag ") + flag.flag, &config);
    if (!st.ok()) Fail(st.ToString(), 2);
  }
  if (f.no_disk) config.node.data_dir.clear();
  if (Status st = FinishConfig(DetectHostResources(), &config, &warnings); !st.ok())
    Fail(st.ToString(), 2);
  for (const std::string& w : warnings) std::cerr << "strata serve: warning: " << w << std::endl;

  auto node = Node::Open(config.node);
  if (!node.ok()) Fail(node.status().ToString());
  auto daemon = Daemon::Start(node->get(), config.daemon);
  if (!daemon.ok()) Fail(daemon.status().ToString());
  std::cout << fmt::format("strata serve: listening on {} (host pool {} MiB, disk tier {})",
                           (*daemon)->socket_path(), (*node)->pool_bytes() >> 20,
                           config.node.data_dir.empty() ? "off" : config.node.data_dir)
            << std::endl;
  if (!config.node.cluster.membership.empty())
    std::cout << fmt::format("strata serve: cluster node ({} membership)",
                             config.node.cluster.membership)
              << std::endl;

  int sig = 0;
  sigwait(&stop_signals, &sig);
  std::cout << "strata serve: " << (sig == SIGTERM ? "SIGTERM" : "SIGINT")
            << ", shutting down" << std::endl;
  (*daemon)->Stop();
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
  cmd->callback([f] { RunServe(*f); });
});

}  // namespace
}  // namespace strata::cli
