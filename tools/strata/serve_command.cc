// `strata serve`: the sidecar daemon. Settings: defaults < --config FILE < STRATA_* environment <
// flags (docs/config.md). Runs until SIGTERM or SIGINT, then stops accepting, disconnects clients,
// flushes the disk tier and exits 0.
#include <signal.h>

#include <iostream>
#include <memory>

#include <fmt/format.h>

#include "command_registry.h"
#include "daemon/config.h"
#include "daemon/daemon.h"
#include "node/node.h"

namespace strata::cli {
namespace {

struct ServeFlags {
  std::string config;
  std::string socket;
  std::string data_dir;
  std::string host_pool;
  std::string disk;
  std::string eviction_policy;
  bool no_disk = false;
  // Cluster (docs/cluster.md).
  std::string membership;
  std::string node_id;
  std::string etcd;
  std::string etcd_prefix;
  std::string etcd_lease_ttl_s;
  std::string cluster_secret_file;
  std::string static_dir;
  std::string static_peers;
  std::string ucx_tls;
  std::string request_timeout_ms;
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
  if (!f.config.empty())
    if (Status st = ApplyConfigFile(f.config, &config); !st.ok()) Fail(st.ToString(), 2);
  if (Status st = ApplyEnvironment(StrataEnvironment(), &config); !st.ok()) Fail(st.ToString(), 2);
  auto flag = [&](const std::string& value, const char* key) {
    if (value.empty()) return;
    std::map<std::string, std::string> one{{key, value}};
    if (Status st = ApplyEnvironment(one, &config); !st.ok()) Fail(st.ToString(), 2);
  };
  flag(f.socket, "STRATA_SOCKET");
  flag(f.data_dir, "STRATA_DATA_DIR");
  flag(f.host_pool, "STRATA_HOST_POOL");
  flag(f.disk, "STRATA_DISK");
  flag(f.eviction_policy, "STRATA_EVICTION_POLICY");
  flag(f.membership, "STRATA_MEMBERSHIP");
  flag(f.node_id, "STRATA_NODE_ID");
  flag(f.etcd, "STRATA_ETCD");
  flag(f.etcd_prefix, "STRATA_ETCD_PREFIX");
  flag(f.etcd_lease_ttl_s, "STRATA_ETCD_LEASE_TTL_S");
  flag(f.cluster_secret_file, "STRATA_CLUSTER_SECRET_FILE");
  flag(f.static_dir, "STRATA_STATIC_DIR");
  flag(f.static_peers, "STRATA_STATIC_PEERS");
  flag(f.ucx_tls, "STRATA_UCX_TLS");
  flag(f.request_timeout_ms, "STRATA_REQUEST_TIMEOUT_MS");
  if (f.no_disk) config.node.data_dir.clear();

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
  cmd->add_option("--socket", f->socket, "Unix socket path [STRATA_SOCKET]");
  cmd->add_option("--data-dir", f->data_dir, "Disk tier directory [STRATA_DATA_DIR]");
  cmd->add_option("--host-pool", f->host_pool, "Host pool size, e.g. 8GiB [STRATA_HOST_POOL]");
  cmd->add_option("--disk", f->disk, "Disk tier size, e.g. 100GiB [STRATA_DISK]");
  cmd->add_option("--eviction-policy", f->eviction_policy, "prefix or lru [STRATA_EVICTION_POLICY]");
  cmd->add_flag("--no-disk", f->no_disk, "Run without a disk tier");
  cmd->add_option("--membership", f->membership, "none, etcd or static [STRATA_MEMBERSHIP]");
  cmd->add_option("--node-id", f->node_id, "Node id in the cluster [STRATA_NODE_ID]");
  cmd->add_option("--etcd", f->etcd, "etcd URL; turns etcd membership on [STRATA_ETCD]");
  cmd->add_option("--etcd-prefix", f->etcd_prefix, "etcd key prefix [STRATA_ETCD_PREFIX]");
  cmd->add_option("--etcd-lease-ttl", f->etcd_lease_ttl_s,
                  "etcd lease TTL in seconds [STRATA_ETCD_LEASE_TTL_S]");
  cmd->add_option("--cluster-secret-file", f->cluster_secret_file,
                  "File holding the cluster secret [STRATA_CLUSTER_SECRET_FILE]");
  cmd->add_option("--static-dir", f->static_dir,
                  "Shared directory for static membership [STRATA_STATIC_DIR]");
  cmd->add_option("--static-peers", f->static_peers,
                  "Comma-separated peer ids for static membership [STRATA_STATIC_PEERS]");
  cmd->add_option("--ucx-tls", f->ucx_tls, "UCX transports, UCX_TLS syntax [STRATA_UCX_TLS]");
  cmd->add_option("--request-timeout-ms", f->request_timeout_ms,
                  "Peer request timeout [STRATA_REQUEST_TIMEOUT_MS]");
  cmd->callback([f] { RunServe(*f); });
});

}  // namespace
}  // namespace strata::cli
