// `strata inspect doctor` (docs/operations.md, "Inspector"): checks of a running node's set-up,
// each pass, warn, fail or skip with what was seen and the exact fix. Run inside the daemon, so
// the limits checked are the daemon's own (memlock, file systems as it sees them).
//
// Clock skew needs several nodes' clocks: the node reports its time (now_unix_ms) and
// `strata inspect --all doctor` compares them; a single node's answer skips it.
//
// Thread-safety: RunDoctor is a pure function of its facts (plus getrlimit and statvfs).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "node/node.h"
#include "strata/namespace.h"
#include "strata/status.h"

namespace strata {

struct DoctorFacts {
  const NodeOptions* options = nullptr;  // REQUIRES: set
  uint64_t host_pool_bytes = 0;
  std::optional<uint64_t> disk_capacity_bytes;  // nullopt: no disk tier
  std::optional<uint64_t> disk_used_bytes;
  std::vector<std::pair<NamespaceId, NamespaceSpec>> namespaces;  // described to the node
  std::string peers_json;              // Cluster::PeersJson(); "" for a single node
  std::optional<Status> membership;    // Cluster::CheckMembership(); nullopt for a single node
};

// The JSON object of the checks: {"now_unix_ms", "checks": [{"name", "status", "detail",
// "fix"}], "summary": {"pass", "warn", "fail", "skip"}}.
std::string RunDoctor(const DoctorFacts& facts);

}  // namespace strata
