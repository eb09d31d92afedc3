// Configuration of `strata serve` (docs/config.md): built-in defaults, overridden by a YAML file,
// then by STRATA_* environment variables, then by command-line flags.
//
// Thread-safety: plain values.
#pragma once

#include <map>
#include <string>

#include "daemon/daemon.h"
#include "node/node.h"
#include "strata/result.h"

namespace strata {

struct ServeConfig {
  NodeOptions node;
  DaemonOptions daemon;
};

// Parses "4GiB", "512MiB", "64M", "1G", "1048576" (bytes). InvalidArgument otherwise.
Result<uint64_t> ParseByteSize(const std::string& text);

// Applies the YAML document at `path` on top of `config`. Unknown keys and bad values are
// InvalidArgument naming the key; an unreadable file is IOError.
Status ApplyConfigFile(const std::string& path, ServeConfig* config);

// Applies the STRATA_* variables present in `env` (name -> value) on top of `config`:
// STRATA_SOCKET, STRATA_HOST_POOL, STRATA_DATA_DIR, STRATA_DISK, STRATA_WRITE_THROUGH,
// STRATA_EVICTION_POLICY, STRATA_PIN_MS, STRATA_MAX_CLIENTS, and the cluster settings
// STRATA_MEMBERSHIP, STRATA_NODE_ID, STRATA_CLUSTER_SECRET, STRATA_CLUSTER_SECRET_FILE,
// STRATA_ETCD, STRATA_ETCD_PREFIX, STRATA_ETCD_LEASE_TTL_S, STRATA_STATIC_DIR,
// STRATA_STATIC_PEERS, STRATA_UCX_TLS, STRATA_REQUEST_TIMEOUT_MS, STRATA_ANNOUNCE_INTERVAL_MS.
Status ApplyEnvironment(const std::map<std::string, std::string>& env, ServeConfig* config);

// The process environment's STRATA_* variables.
std::map<std::string, std::string> StrataEnvironment();

}  // namespace strata
