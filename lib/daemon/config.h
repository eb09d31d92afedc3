// Configuration of `strata serve` (docs/config.md): built-in defaults, overridden by a YAML file,
// then by STRATA_* environment variables, then by command-line flags, then checked as a whole
// (FinishConfig). Errors name the setting and where its value came from; nothing here throws.
//
// Thread-safety: plain values.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "daemon/daemon.h"
#include "node/node.h"
#include "strata/result.h"

namespace strata {

struct ServeConfig {
  NodeOptions node;
  DaemonOptions daemon;
};

// Things worth telling the operator that do not stop the daemon (a misspelled variable, a
// duplicate key, a clamped bound), one line each. Callers log them.
using ConfigWarnings = std::vector<std::string>;

// Parses a byte size: a number, optionally followed by a unit (spaces allowed between):
// B; KiB, MiB, GiB, TiB (powers of 2); KB, MB, GB, TB (powers of 10, as disk vendors use them).
// The bare suffixes K, M, G, T are refused as ambiguous (the error says which two they may mean).
// InvalidArgument otherwise, or when the value does not fit in 64 bits.
Result<uint64_t> ParseByteSize(const std::string& text);

// Sets the setting `key` (its YAML name, docs/config.md) to `value`. `source` names where the
// value came from in errors ("config 'strata.yaml'", "environment STRATA_DISK", "flag --disk").
// Sizes must be positive; an empty value of a size or number is an error.
Status ApplySetting(const std::string& key, const std::string& value, const std::string& source,
                    ServeConfig* config);

// Applies the YAML document at `path` on top of `config`. Unknown keys, bad values and values that
// are not scalars (a list or a mapping where a scalar is expected) are InvalidArgument naming the
// key; an unreadable file is IOError. A key given twice is applied twice (the last one wins) and
// warned about.
Status ApplyConfigFile(const std::string& path, ServeConfig* config,
                       ConfigWarnings* warnings = nullptr);

// Applies the STRATA_* variables present in `env` (name -> value) on top of `config`:
// STRATA_SOCKET, STRATA_HOST_POOL, STRATA_DEVICE_POOL, STRATA_DEVICE, STRATA_DATA_DIR, STRATA_DISK,
// STRATA_DISK_COMPRESSION, STRATA_WRITE_THROUGH, STRATA_DISK_ADMISSION_MIN_FREQUENCY,
// STRATA_DISK_DIRECT_IO,
// STRATA_EVICTION_POLICY, STRATA_PIN_MS, STRATA_MAX_CLIENTS, and the cluster settings
// STRATA_MEMBERSHIP, STRATA_NODE_ID, STRATA_CLUSTER_SECRET, STRATA_CLUSTER_SECRET_FILE,
// STRATA_ETCD, STRATA_ETCD_PREFIX, STRATA_ETCD_LEASE_TTL_S, STRATA_STATIC_DIR,
// STRATA_STATIC_PEERS, STRATA_UCX_TLS, STRATA_REQUEST_TIMEOUT_MS, STRATA_ANNOUNCE_INTERVAL_MS,
// the KV-event settings, and the trust settings STRATA_SOCKET_GROUP, STRATA_ALLOW_UIDS,
// STRATA_ALLOW_GIDS, STRATA_ADMIN_UIDS, STRATA_TENANT_UIDS, STRATA_TENANT_GIDS,
// STRATA_IDLE_TIMEOUT_MS, STRATA_MAX_CLIENTS_PER_UID, STRATA_MAX_PIN_MS (docs/config.md).
// Other STRATA_* variables that no Strata program reads are warned about (with the nearest
// known name), since a misspelled variable would otherwise be ignored in silence.
Status ApplyEnvironment(const std::map<std::string, std::string>& env, ServeConfig* config,
                        ConfigWarnings* warnings = nullptr);

// The machine facts that FinishConfig checks the settings against.
struct HostResources {
  uint64_t physical_memory_bytes = 0;  // 0: unknown (not checked)
};
HostResources DetectHostResources();

// Checks the settings against each other and the machine, once every source was applied:
// a host pool of at least 16 MiB and at most the physical memory (else InvalidArgument, naming
// host_pool); a disk bound above the space the data directory's filesystem has (free space plus
// what the tier's own files hold already) is clamped to it, with a warning.
Status FinishConfig(const HostResources& host, ServeConfig* config, ConfigWarnings* warnings);

// The process environment's STRATA_* variables.
std::map<std::string, std::string> StrataEnvironment();

}  // namespace strata
