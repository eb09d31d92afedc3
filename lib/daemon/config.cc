#include "daemon/config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>

#include <yaml-cpp/yaml.h>

#include "store/disk_admission.h"
#include "store/disk_compression.h"
#include "store/eviction_policy.h"

extern char** environ;

namespace strata {
namespace {

Result<bool> ParseBool(const std::string& key, const std::string& v) {
  if (v == "true" || v == "1" || v == "yes" || v == "on") return true;
  if (v == "false" || v == "0" || v == "no" || v == "off") return false;
  return Status::InvalidArgument(key + ": '" + v + "' is not a boolean");
}

Result<uint32_t> ParseU32(const std::string& key, const std::string& v) {
  try {
    size_t used = 0;
    unsigned long n = std::stoul(v, &used, 0);
    if (used != v.size() || n > UINT32_MAX) throw std::out_of_range(v);
    return static_cast<uint32_t>(n);
  } catch (const std::exception&) {
    return Status::InvalidArgument(key + ": '" + v + "' is not a non-negative integer");
  }
}

Result<uint64_t> ParseSize(const std::string& key, const std::string& v) {
  auto n = ParseByteSize(v);
  if (!n.ok()) return n.status().WithContext(key);
  if (*n == 0) {
    const std::string hint =
        key == "disk"          ? " (for no disk tier, leave data_dir empty or pass --no-disk)"
        : key == "device_pool" ? " (for no device tier, leave device_pool unset)"
                               : "";
    return Status::InvalidArgument(key + ": '" + v + "' is zero bytes; a size must be positive" +
                                   hint);
  }
  return *n;
}

bool IsIpAddress(const std::string& v) {
  in_addr v4{};
  in6_addr v6{};
  return ::inet_pton(AF_INET, v.c_str(), &v4) == 1 || ::inet_pton(AF_INET6, v.c_str(), &v6) == 1;
}

bool IsLoopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host == "[::1]" || host.rfind("127.", 0) == 0;
}

// The host part of a URL such as "http://10.0.0.1:2379/".
std::string UrlHost(const std::string& url) {
  size_t b = url.find("://");
  b = b == std::string::npos ? 0 : b + 3;
  size_t e = url.find('/', b);
  std::string authority = url.substr(b, e == std::string::npos ? std::string::npos : e - b);
  if (!authority.empty() && authority.front() == '[')
    return authority.substr(0, authority.find(']') + 1);
  return authority.substr(0, authority.find(':'));
}

// The KV-event settings (docs/kv-events.md).
Status SetEventsSetting(const std::string& key, const std::string& value, ServeConfig* c) {
  events::KvEventsOptions& ev = c->node.kv_events;
  auto positive = [&](uint32_t* out) -> Status {
    STRATA_ASSIGN_OR_RETURN(*out, ParseU32(key, value));
    if (*out == 0) return Status::InvalidArgument(key + ": must be at least 1");
    return Status::OK();
  };
  if (key == "kv_events") {
    ev.endpoint = value;
  } else if (key == "kv_events_replay") {
    ev.replay_endpoint = value;
  } else if (key == "kv_events_topic") {
    ev.topic = value;
  } else if (key == "kv_events_replay_batches") {
    return positive(&ev.replay_batches);
  } else if (key == "kv_events_max_pending") {
    return positive(&ev.max_pending_events);
  } else if (key == "kv_events_batch_ms") {
    return positive(&ev.batch_interval_ms);
  } else if (key == "kv_events_block_size") {
    return positive(&ev.block_size);
  } else if (key == "kv_events_medium_host") {
    ev.medium_host = value;
  } else if (key == "kv_events_medium_disk") {
    ev.medium_disk = value;
  } else if (key == "kv_events_medium_device") {
    ev.medium_device = value;
  } else if (key == "kv_events_hash_format") {
    if (value != "int" && value != "bytes")
      return Status::InvalidArgument(key + ": '" + value + "' (expected int or bytes)");
    ev.int_hashes = value == "int";
  } else if (key == "kv_events_encoding") {
    if (value != "map" && value != "array")
      return Status::InvalidArgument(key + ": '" + value + "' (expected map or array)");
    ev.encoding = value == "map" ? events::EventEncoding::kTaggedMap
                                 : events::EventEncoding::kTaggedArray;
  } else if (key == "engine_events") {
    if (value.empty() || value == "none") {
      c->node.engine_events.engines.clear();
    } else {
      STRATA_ASSIGN_OR_RETURN(c->node.engine_events.engines,
                              events::ParseEngineEndpoints(value));
    }
  } else {
    return Status::InvalidArgument("unknown setting '" + key + "'");
  }
  return Status::OK();
}

// Settings whose value is a list: comma-separated in the environment and on flags, a YAML list
// or a comma-separated scalar in a config file.
bool IsListSetting(const std::string& key) {
  return key == "allow_uids" || key == "allow_gids" || key == "admin_uids" ||
         key == "tenant_uids" || key == "tenant_gids";
}

// The items of a comma-separated list, spaces around each trimmed; empty items are errors.
Result<std::vector<std::string>> ParseList(const std::string& key, const std::string& value) {
  std::vector<std::string> items;
  size_t begin = 0;
  while (true) {
    const size_t comma = value.find(',', begin);
    std::string item = value.substr(begin, comma == std::string::npos ? std::string::npos
                                                                     : comma - begin);
    const size_t first = item.find_first_not_of(" \t");
    const size_t last = item.find_last_not_of(" \t");
    item = first == std::string::npos ? "" : item.substr(first, last - first + 1);
    if (item.empty())
      return Status::InvalidArgument(key + ": '" + value + "' has an empty item");
    items.push_back(std::move(item));
    if (comma == std::string::npos) return items;
    begin = comma + 1;
  }
}

Result<std::vector<uint32_t>> ParseIdList(const std::string& key, const std::string& value) {
  STRATA_ASSIGN_OR_RETURN(std::vector<std::string> items, ParseList(key, value));
  std::vector<uint32_t> ids;
  for (const std::string& item : items) {
    STRATA_ASSIGN_OR_RETURN(uint32_t id, ParseU32(key, item));
    ids.push_back(id);
  }
  return ids;
}

// tenant_uids / tenant_gids: SALT:ID items (the id after the last ':'). The value replaces every
// grant of its kind (uids or gids) that an earlier source made; a tenant left with neither goes.
Status SetTenantGrants(const std::string& key, const std::string& value, bool gid,
                       std::vector<DaemonOptions::Tenant>* out) {
  STRATA_ASSIGN_OR_RETURN(std::vector<std::string> items, ParseList(key, value));
  std::vector<DaemonOptions::Tenant> copy = *out;  // a refused value changes nothing
  std::vector<DaemonOptions::Tenant>* tenants = &copy;
  for (DaemonOptions::Tenant& t : *tenants) (gid ? t.gids : t.uids).clear();
  for (const std::string& item : items) {
    const size_t colon = item.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == item.size())
      return Status::InvalidArgument(key + ": '" + item + "': expected SALT:" +
                                     (gid ? "GID" : "UID") + " with a non-empty salt");
    STRATA_ASSIGN_OR_RETURN(uint32_t id, ParseU32(key, item.substr(colon + 1)));
    const std::string salt = item.substr(0, colon);
    auto it = std::find_if(tenants->begin(), tenants->end(),
                           [&](const DaemonOptions::Tenant& t) { return t.salt == salt; });
    if (it == tenants->end()) it = tenants->insert(tenants->end(), {salt, {}, {}});
    (gid ? it->gids : it->uids).push_back(id);
  }
  std::erase_if(*tenants, [](const DaemonOptions::Tenant& t) {
    return t.uids.empty() && t.gids.empty();
  });
  *out = std::move(copy);
  return Status::OK();
}

// Who may connect and what bounds a client (docs/operations.md, "Security").
Status SetTrustSetting(const std::string& key, const std::string& value, ServeConfig* c) {
  DaemonOptions& d = c->daemon;
  if (key == "socket_group") {
    if (value.empty()) return Status::InvalidArgument("socket_group: empty group");
    d.socket_group = value;
  } else if (key == "allow_uids") {
    STRATA_ASSIGN_OR_RETURN(std::vector<uint32_t> ids, ParseIdList(key, value));
    d.allowed_uids.assign(ids.begin(), ids.end());
  } else if (key == "allow_gids") {
    STRATA_ASSIGN_OR_RETURN(std::vector<uint32_t> ids, ParseIdList(key, value));
    d.allowed_gids.assign(ids.begin(), ids.end());
  } else if (key == "admin_uids") {
    STRATA_ASSIGN_OR_RETURN(std::vector<uint32_t> ids, ParseIdList(key, value));
    d.admin_uids.assign(ids.begin(), ids.end());
  } else if (key == "tenant_uids" || key == "tenant_gids") {
    return SetTenantGrants(key, value, key == "tenant_gids", &d.tenants);
  } else if (key == "idle_timeout_ms") {
    STRATA_ASSIGN_OR_RETURN(d.idle_timeout_ms, ParseU32(key, value));
  } else if (key == "max_clients_per_uid" || key == "max_pin_ms") {
    STRATA_ASSIGN_OR_RETURN(uint32_t n, ParseU32(key, value));
    if (n == 0) return Status::InvalidArgument(key + ": must be at least 1");
    (key == "max_pin_ms" ? d.max_pin_ms : d.max_clients_per_uid) = n;
  } else {
    return Status::InvalidArgument("unknown setting '" + key + "'");
  }
  return Status::OK();
}

// Sets one setting by its config-file name. The environment and the flags map onto the same
// names.
Status Set(const std::string& key, const std::string& value, ServeConfig* c) {
  if (key == "socket") {
    if (value.empty()) return Status::InvalidArgument("socket: empty path");
    c->daemon.socket_path = value;
  } else if (key == "socket_mode") {
    STRATA_ASSIGN_OR_RETURN(uint32_t mode,
                            ParseU32(key, value.rfind("0", 0) == 0 ? value : "0" + value));
    if (mode > 0777) return Status::InvalidArgument("socket_mode: '" + value + "' is not a mode");
    c->daemon.socket_mode = mode;
  } else if (key == "max_clients") {
    STRATA_ASSIGN_OR_RETURN(c->daemon.max_clients, ParseU32(key, value));
    if (c->daemon.max_clients == 0)
      return Status::InvalidArgument("max_clients: must be at least 1");
  } else if (key == "host_pool") {
    STRATA_ASSIGN_OR_RETURN(c->node.host_pool_bytes, ParseSize(key, value));
  } else if (key == "host_slab") {
    STRATA_ASSIGN_OR_RETURN(uint64_t slab, ParseSize(key, value));
    constexpr uint64_t kMiB2 = uint64_t{2} << 20;
    if (slab < kMiB2 || slab % kMiB2 != 0 || slab > (uint64_t{256} << 20))
      return Status::InvalidArgument("host_slab: '" + value +
                                     "' must be a multiple of 2 MiB from 2 MiB to 256 MiB (the "
                                     "largest block the host pool holds is one slab)");
    c->node.host_slab_bytes = slab;
  } else if (key == "device_pool") {
    STRATA_ASSIGN_OR_RETURN(c->node.device_pool_bytes, ParseSize(key, value));
  } else if (key == "device") {
    STRATA_ASSIGN_OR_RETURN(c->node.device, ParseU32(key, value));
  } else if (key == "data_dir") {
    c->node.data_dir = value;
  } else if (key == "disk") {
    STRATA_ASSIGN_OR_RETURN(c->node.disk_bytes, ParseSize(key, value));
  } else if (key == "disk_compression") {
    if (auto parsed = store::ParseDiskCompression(value); !parsed.ok())
      return parsed.status().WithContext("disk_compression");
    c->node.disk_compression = value;
  } else if (key == "write_through") {
    STRATA_ASSIGN_OR_RETURN(c->node.write_through, ParseBool(key, value));
  } else if (key == "disk_admission_min_frequency") {
    STRATA_ASSIGN_OR_RETURN(uint32_t n, ParseU32(key, value));
    if (n > store::DiskAdmission::kMaxMinFrequency)
      return Status::InvalidArgument(
          key + ": '" + value + "' is above " +
          std::to_string(store::DiskAdmission::kMaxMinFrequency) +
          ", the most the frequency sketch counts (0 or 1 admits every victim, 2 refuses keys "
          "seen once)");
    c->node.disk_admission_min_frequency = n;
  } else if (key == "disk_direct_io") {
    STRATA_ASSIGN_OR_RETURN(c->node.disk_direct_io, ParseBool(key, value));
  } else if (key == "eviction_policy") {
    if (auto kind = store::ParsePolicyKind(value); !kind.ok())
      return kind.status().WithContext("eviction_policy");
    c->node.eviction_policy = value;
  } else if (key == "recompute_tokens_per_second") {
    double v = 0;
    try {
      size_t used = 0;
      v = std::stod(value, &used);
      if (used != value.size()) throw std::invalid_argument(value);
    } catch (const std::exception&) {
      v = -1;
    }
    if (!(v >= 0) || !std::isfinite(v))
      return Status::InvalidArgument("recompute_tokens_per_second: '" + value +
                                     "' is not a non-negative number of tokens per second");
    c->node.recompute_tokens_per_second = v;
  } else if (key == "pin_ms") {
    STRATA_ASSIGN_OR_RETURN(c->node.default_pin_ms, ParseU32(key, value));
  } else if (key == "membership") {
    if (value != "" && value != "none" && value != "etcd" && value != "static")
      return Status::InvalidArgument("membership: '" + value + "' (expected none, etcd or static)");
    c->node.cluster.membership = value == "none" ? "" : value;
  } else if (key == "node_id") {
    c->node.cluster.node_id = value;
  } else if (key == "cluster_secret") {
    c->node.cluster.secret = value;
  } else if (key == "cluster_secret_file") {
    c->node.cluster.secret_file = value;
  } else if (key == "etcd") {
    // Setting an endpoint turns etcd membership on.
    c->node.cluster.etcd_endpoint = value;
    if (c->node.cluster.membership.empty()) c->node.cluster.membership = "etcd";
  } else if (key == "etcd_prefix") {
    c->node.cluster.etcd_prefix = value;
  } else if (key == "etcd_lease_ttl_s") {
    STRATA_ASSIGN_OR_RETURN(c->node.cluster.etcd_lease_ttl_s, ParseU32(key, value));
    if (c->node.cluster.etcd_lease_ttl_s == 0)
      return Status::InvalidArgument("etcd_lease_ttl_s: must be at least 1");
  } else if (key == "static_dir") {
    c->node.cluster.static_dir = value;
  } else if (key == "static_peers") {
    c->node.cluster.static_peers.clear();
    size_t start = 0;
    while (start <= value.size()) {
      size_t comma = value.find(',', start);
      if (comma == std::string::npos) comma = value.size();
      std::string id = value.substr(start, comma - start);
      if (!id.empty()) c->node.cluster.static_peers.push_back(id);
      start = comma + 1;
    }
  } else if (key == "ucx_tls") {
    c->node.cluster.ucx_tls = value;
  } else if (key == "listen_addr") {
    if (value != "*" && !IsIpAddress(value))
      return Status::InvalidArgument("listen_addr: '" + value +
                                     "' is not an IPv4 or IPv6 address (or * for every interface)");
    c->node.cluster.listen_addr = value;
  } else if (key == "pull_read_ahead") {
    if (value == "auto") {
      c->node.cluster.pull_read_ahead.reset();
    } else {
      STRATA_ASSIGN_OR_RETURN(bool on, ParseBool(key, value));
      c->node.cluster.pull_read_ahead = on;
    }
  } else if (key == "verify_loads") {
    STRATA_ASSIGN_OR_RETURN(c->daemon.verify_loads, ParseBool(key, value));
  } else if (key == "pull_mapped") {
    STRATA_ASSIGN_OR_RETURN(c->node.cluster.pull_mapped, ParseBool(key, value));
  } else if (key == "pull_on_lookup") {
    STRATA_ASSIGN_OR_RETURN(c->node.cluster.pull_on_lookup, ParseBool(key, value));
  } else if (key == "holder_memory_ms") {
    STRATA_ASSIGN_OR_RETURN(c->node.cluster.holder_memory_ms, ParseU32(key, value));
  } else if (key == "pull_coalesce_bytes") {
    if (value == "0") {
      c->node.cluster.pull_coalesce_bytes = 0;
    } else {
      STRATA_ASSIGN_OR_RETURN(c->node.cluster.pull_coalesce_bytes, ParseSize(key, value));
    }
    if (c->node.cluster.pull_coalesce_bytes > (uint64_t{256} << 20))
      return Status::InvalidArgument("pull_coalesce_bytes: " + value +
                                     " is more than 256MiB (0 turns coalescing off)");
  } else if (key == "ucx_peer_errors") {
    STRATA_ASSIGN_OR_RETURN(c->node.cluster.ucx_peer_errors, ParseBool(key, value));
  } else if (key == "progress_spin_rounds") {
    if (value == "auto") {
      c->node.cluster.progress_spin_rounds.reset();
    } else if (value == "-1") {
      c->node.cluster.progress_spin_rounds = -1;
    } else {
      STRATA_ASSIGN_OR_RETURN(const uint32_t n, ParseU32(key, value));
      if (n > 10'000'000)
        return Status::InvalidArgument("progress_spin_rounds: " + value +
                                       " is more than 10000000 (-1 spins for ever)");
      c->node.cluster.progress_spin_rounds = static_cast<int>(n);
    }
  } else if (key == "request_timeout_ms") {
    STRATA_ASSIGN_OR_RETURN(c->node.cluster.request_timeout_ms, ParseU32(key, value));
    if (c->node.cluster.request_timeout_ms == 0)
      return Status::InvalidArgument("request_timeout_ms: must be at least 1");
  } else if (key == "announce_interval_ms") {
    STRATA_ASSIGN_OR_RETURN(c->node.cluster.announce_interval_ms, ParseU32(key, value));
    if (c->node.cluster.announce_interval_ms == 0)
      return Status::InvalidArgument("announce_interval_ms: must be at least 1");
  } else if (key.rfind("kv_events", 0) == 0 || key == "engine_events") {
    return SetEventsSetting(key, value, c);
  } else if (IsListSetting(key) || key == "socket_group" || key == "idle_timeout_ms" ||
             key == "max_clients_per_uid" || key == "max_pin_ms") {
    return SetTrustSetting(key, value, c);
  } else {
    return Status::InvalidArgument("unknown setting '" + key + "'");
  }
  return Status::OK();
}

// Edit distance (insertions, deletions, substitutions), for "did you mean".
size_t Distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

struct EnvVar {
  const char* var;
  const char* key;
};
constexpr EnvVar kVars[] = {
    {"STRATA_SOCKET", "socket"},
    {"STRATA_HOST_POOL", "host_pool"},
    {"STRATA_HOST_SLAB", "host_slab"},
    {"STRATA_DEVICE_POOL", "device_pool"},
    {"STRATA_DEVICE", "device"},
    {"STRATA_DATA_DIR", "data_dir"},
    {"STRATA_DISK", "disk"},
    {"STRATA_DISK_COMPRESSION", "disk_compression"},
    {"STRATA_WRITE_THROUGH", "write_through"},
    {"STRATA_DISK_ADMISSION_MIN_FREQUENCY", "disk_admission_min_frequency"},
    {"STRATA_DISK_DIRECT_IO", "disk_direct_io"},
    {"STRATA_EVICTION_POLICY", "eviction_policy"},
    {"STRATA_PIN_MS", "pin_ms"},
    {"STRATA_RECOMPUTE_TOKENS_PER_SECOND", "recompute_tokens_per_second"},
    {"STRATA_MAX_CLIENTS", "max_clients"},
    {"STRATA_MEMBERSHIP", "membership"},
    {"STRATA_NODE_ID", "node_id"},
    {"STRATA_CLUSTER_SECRET", "cluster_secret"},
    {"STRATA_CLUSTER_SECRET_FILE", "cluster_secret_file"},
    {"STRATA_ETCD", "etcd"},
    {"STRATA_ETCD_PREFIX", "etcd_prefix"},
    {"STRATA_ETCD_LEASE_TTL_S", "etcd_lease_ttl_s"},
    {"STRATA_STATIC_DIR", "static_dir"},
    {"STRATA_STATIC_PEERS", "static_peers"},
    {"STRATA_UCX_TLS", "ucx_tls"},
    {"STRATA_LISTEN_ADDR", "listen_addr"},
    {"STRATA_REQUEST_TIMEOUT_MS", "request_timeout_ms"},
    {"STRATA_UCX_PEER_ERRORS", "ucx_peer_errors"},
    {"STRATA_PULL_COALESCE_BYTES", "pull_coalesce_bytes"},
    {"STRATA_PROGRESS_SPIN_ROUNDS", "progress_spin_rounds"},
    {"STRATA_PULL_READ_AHEAD", "pull_read_ahead"},
    {"STRATA_PULL_ON_LOOKUP", "pull_on_lookup"},
    {"STRATA_PULL_MAPPED", "pull_mapped"},
    {"STRATA_HOLDER_MEMORY_MS", "holder_memory_ms"},
    {"STRATA_VERIFY_LOADS", "verify_loads"},
    {"STRATA_ANNOUNCE_INTERVAL_MS", "announce_interval_ms"},
    {"STRATA_KV_EVENTS", "kv_events"},
    {"STRATA_KV_EVENTS_REPLAY", "kv_events_replay"},
    {"STRATA_KV_EVENTS_TOPIC", "kv_events_topic"},
    {"STRATA_KV_EVENTS_REPLAY_BATCHES", "kv_events_replay_batches"},
    {"STRATA_KV_EVENTS_MAX_PENDING", "kv_events_max_pending"},
    {"STRATA_KV_EVENTS_BATCH_MS", "kv_events_batch_ms"},
    {"STRATA_KV_EVENTS_BLOCK_SIZE", "kv_events_block_size"},
    {"STRATA_KV_EVENTS_MEDIUM_HOST", "kv_events_medium_host"},
    {"STRATA_KV_EVENTS_MEDIUM_DISK", "kv_events_medium_disk"},
    {"STRATA_KV_EVENTS_MEDIUM_DEVICE", "kv_events_medium_device"},
    {"STRATA_KV_EVENTS_HASH_FORMAT", "kv_events_hash_format"},
    {"STRATA_KV_EVENTS_ENCODING", "kv_events_encoding"},
    {"STRATA_ENGINE_EVENTS", "engine_events"},
    {"STRATA_SOCKET_GROUP", "socket_group"},
    {"STRATA_ALLOW_UIDS", "allow_uids"},
    {"STRATA_ALLOW_GIDS", "allow_gids"},
    {"STRATA_ADMIN_UIDS", "admin_uids"},
    {"STRATA_TENANT_UIDS", "tenant_uids"},
    {"STRATA_TENANT_GIDS", "tenant_gids"},
    {"STRATA_IDLE_TIMEOUT_MS", "idle_timeout_ms"},
    {"STRATA_MAX_CLIENTS_PER_UID", "max_clients_per_uid"},
    {"STRATA_MAX_PIN_MS", "max_pin_ms"},
};
// STRATA_* variables that other Strata programs read (not settings of the daemon): not warned.
constexpr const char* kOtherVars[] = {
    "STRATA_CLI",          "STRATA_DAEMON_USER",  "STRATA_KV_HUGE_PAGES",
    "STRATA_KV_SHARE",     "STRATA_LOAD_INDEX",   "STRATA_STORE_PATH",   "STRATA_PEERS_VENV",
    "STRATA_ENGINES_VENV", "STRATA_SKIP_ENGINES", "STRATA_ENGINES_MIN_FREE_GIB"};

// Free bytes of the filesystem holding `dir`, or of its nearest existing ancestor (the directory
// is created at start-up). nullopt when none can be examined.
std::optional<uint64_t> FreeBytes(const std::string& dir) {
  std::filesystem::path p = std::filesystem::absolute(dir.empty() ? "." : dir);
  for (;;) {
    struct statvfs vfs;
    if (::statvfs(p.c_str(), &vfs) == 0) return uint64_t(vfs.f_bavail) * vfs.f_frsize;
    if (errno != ENOENT || !p.has_parent_path() || p.parent_path() == p) return std::nullopt;
    p = p.parent_path();
  }
}

std::string Size(uint64_t bytes) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 6) {
    v /= 1024;
    ++u;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

}  // namespace

Result<uint64_t> ParseByteSize(const std::string& text) {
  size_t b = 0, e = text.size();
  while (b < e && text[b] == ' ') ++b;
  while (e > b && text[e - 1] == ' ') --e;
  const std::string t = text.substr(b, e - b);
  size_t i = 0;
  while (i < t.size() && std::isdigit(static_cast<unsigned char>(t[i]))) ++i;
  if (i == 0)
    return Status::InvalidArgument("'" + text + "' is not a size (e.g. 64GiB, 512MiB, 100GB)");
  uint64_t n = 0;
  for (size_t k = 0; k < i; ++k) {
    const uint64_t d = static_cast<uint64_t>(t[k] - '0');
    if (n > (UINT64_MAX - d) / 10)
      return Status::InvalidArgument("'" + text + "' is too large");
    n = n * 10 + d;
  }
  std::string unit = t.substr(i);
  while (!unit.empty() && unit.front() == ' ') unit.erase(unit.begin());
  struct Unit {
    const char* name;
    uint64_t mult;
  };
  static constexpr Unit kUnits[] = {
      {"", 1},
      {"B", 1},
      {"KiB", uint64_t{1} << 10},
      {"MiB", uint64_t{1} << 20},
      {"GiB", uint64_t{1} << 30},
      {"TiB", uint64_t{1} << 40},
      {"KB", 1000},
      {"kB", 1000},
      {"MB", 1000 * 1000},
      {"GB", 1000 * 1000 * 1000},
      {"TB", uint64_t{1000} * 1000 * 1000 * 1000},
  };
  for (const Unit& u : kUnits) {
    if (unit != u.name) continue;
    if (n > UINT64_MAX / u.mult) return Status::InvalidArgument("'" + text + "' is too large");
    return n * u.mult;
  }
  if (unit == "K" || unit == "M" || unit == "G" || unit == "T" || unit == "k") {
    const char c = static_cast<char>(std::toupper(static_cast<unsigned char>(unit[0])));
    return Status::InvalidArgument("'" + text + "' is ambiguous: write " + t.substr(0, i) + c +
                                   "iB (powers of 2) or " + t.substr(0, i) + c +
                                   "B (powers of 10)");
  }
  return Status::InvalidArgument("'" + text + "': unknown unit '" + unit +
                                 "' (B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)");
}

Status ApplySetting(const std::string& key, const std::string& value, const std::string& source,
                    ServeConfig* config) {
  return Set(key, value, config).WithContext(source);
}

Status ApplyConfigFile(const std::string& path, ServeConfig* config, ConfigWarnings* warnings) {
  const std::string source = "config '" + path + "'";
  std::ifstream in(path);
  if (!in) return Status::IOError("cannot read " + source + ": " + std::strerror(errno));
  try {
    YAML::Node root = YAML::Load(in);
    if (root.IsNull()) return Status::OK();
    if (!root.IsMap()) return Status::InvalidArgument(source + ": not a mapping of settings");
    std::map<std::string, int> seen;  // key -> line of its first occurrence (1-based)
    for (const auto& kv : root) {
      const int line = kv.first.Mark().line + 1;
      if (!kv.first.IsScalar())
        return Status::InvalidArgument(source + ", line " + std::to_string(line) +
                                       ": a setting's name must be a plain word");
      const std::string key = kv.first.Scalar();
      if (kv.second.IsNull())
        return Status::InvalidArgument(source + ": '" + key + "' has no value");
      std::string value;
      if (kv.second.IsSequence() && IsListSetting(key)) {
        // A list setting may be a YAML list of scalars: the same as its comma-separated form.
        for (const auto& item : kv.second) {
          if (!item.IsScalar())
            return Status::InvalidArgument(source + ": '" + key +
                                           "' must be a list of single values");
          value += (value.empty() ? "" : ",") + item.Scalar();
        }
        if (value.empty()) return Status::InvalidArgument(source + ": '" + key + "' is empty");
      } else if (!kv.second.IsScalar()) {
        return Status::InvalidArgument(source + ": '" + key + "' must be a single value, not a " +
                                       (kv.second.IsMap() ? "mapping" : "list"));
      } else {
        value = kv.second.Scalar();
      }
      auto [it, first] = seen.emplace(key, line);
      if (!first && warnings != nullptr)
        warnings->push_back(source + ": '" + key + "' is set twice (lines " +
                            std::to_string(it->second) + " and " + std::to_string(line) +
                            "); the last one wins");
      STRATA_RETURN_IF_ERROR(ApplySetting(key, value, source, config));
    }
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument(source + ": " + e.what());
  }
  return Status::OK();
}

Status ApplyEnvironment(const std::map<std::string, std::string>& env, ServeConfig* config,
                        ConfigWarnings* warnings) {
  for (const auto& [var, key] : kVars) {
    auto it = env.find(var);
    if (it == env.end()) continue;
    STRATA_RETURN_IF_ERROR(
        ApplySetting(key, it->second, std::string("environment ") + var, config));
  }
  if (warnings == nullptr) return Status::OK();
  for (const auto& [name, value] : env) {
    if (name.rfind("STRATA_", 0) != 0) continue;
    bool known = false;
    for (const auto& v : kVars) known = known || name == v.var;
    for (const char* v : kOtherVars) known = known || name == v;
    if (known) continue;
    const char* nearest = nullptr;
    size_t best = SIZE_MAX;
    for (const auto& v : kVars) {
      const size_t d = Distance(name, v.var);
      if (d < best) {
        best = d;
        nearest = v.var;
      }
    }
    std::string w = "environment " + name + " is not a Strata setting; ignored";
    if (best <= 3) w += " (did you mean " + std::string(nearest) + "?)";
    warnings->push_back(w);
  }
  return Status::OK();
}

HostResources DetectHostResources() {
  HostResources r;
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page = ::sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) r.physical_memory_bytes = uint64_t(pages) * uint64_t(page);
  return r;
}

Status FinishConfig(const HostResources& host, ServeConfig* config, ConfigWarnings* warnings) {
  // Tenant 0 is the shared one; each private tenant (tenant_uids, tenant_gids) has a slab class of
  // its own, numbered in a byte.
  if (config->daemon.tenants.size() > 255)
    return Status::InvalidArgument("tenant_uids/tenant_gids: " +
                                   std::to_string(config->daemon.tenants.size()) +
                                   " private tenants; at most 255");
  config->node.tenants = static_cast<uint16_t>(config->daemon.tenants.size() + 1);
  // One slab of the host pool (host_slab, default 16 MiB).
  const uint64_t kMinPool =
      config->node.host_slab_bytes ? config->node.host_slab_bytes : uint64_t{16} << 20;
  const uint64_t pool = config->node.host_pool_bytes;
  if (pool != 0 && pool < kMinPool)
    return Status::InvalidArgument("host_pool: " + Size(pool) + " is below the minimum of " +
                                   Size(kMinPool) + " (one slab)");
  if (pool != 0 && host.physical_memory_bytes != 0 && pool > host.physical_memory_bytes)
    return Status::InvalidArgument("host_pool: " + Size(pool) + " is more than this machine's " +
                                   Size(host.physical_memory_bytes) + " of memory");
  const std::string& dir = config->node.data_dir;
  if (!dir.empty() && config->node.disk_bytes != 0) {
    std::optional<uint64_t> free_bytes = FreeBytes(dir);
    if (free_bytes) {
      // The tier's own payload file is space it may keep using.
      std::error_code ec;
      const auto own = std::filesystem::file_size(std::filesystem::path(dir) / "blocks.data", ec);
      const uint64_t room = *free_bytes + (ec ? 0 : own);
      if (config->node.disk_bytes > room) {
        if (warnings != nullptr)
          warnings->push_back("disk: " + Size(config->node.disk_bytes) + " is more than the " +
                              Size(room) + " that the filesystem of '" + dir +
                              "' has free; the disk tier is bounded to " + Size(room));
        config->node.disk_bytes = room;
        if (room == 0) return Status::NoSpace("disk: the filesystem of '" + dir + "' is full");
      }
    }
  }
  const ClusterOptions& cluster = config->node.cluster;
  if (cluster.membership == "etcd" && IsLoopback(cluster.listen_addr) &&
      !IsLoopback(UrlHost(cluster.etcd_endpoint)) && warnings != nullptr)
    warnings->push_back("listen_addr: " + cluster.listen_addr +
                        " (loopback) while etcd is at '" + cluster.etcd_endpoint +
                        "'; peers on other hosts cannot reach this node: set listen_addr to its "
                        "cluster-facing address");
  return Status::OK();
}

std::map<std::string, std::string> StrataEnvironment() {
  std::map<std::string, std::string> out;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string kv(*e);
    if (kv.rfind("STRATA_", 0) != 0) continue;
    auto eq = kv.find('=');
    if (eq != std::string::npos) out[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return out;
}

}  // namespace strata
