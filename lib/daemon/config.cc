#include "daemon/config.h"

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>

#include <yaml-cpp/yaml.h>

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

// Sets one setting by its config-file name. The environment maps onto the same names.
Status Set(const std::string& key, const std::string& value, ServeConfig* c) {
  if (key == "socket") {
    c->daemon.socket_path = value;
  } else if (key == "socket_mode") {
    STRATA_ASSIGN_OR_RETURN(uint32_t mode, ParseU32(key, value.rfind("0", 0) == 0 ? value : "0" + value));
    if (mode > 0777) return Status::InvalidArgument("socket_mode: '" + value + "' is not a mode");
    c->daemon.socket_mode = mode;
  } else if (key == "max_clients") {
    STRATA_ASSIGN_OR_RETURN(c->daemon.max_clients, ParseU32(key, value));
  } else if (key == "host_pool") {
    auto v = ParseByteSize(value);
    if (!v.ok()) return v.status().WithContext(key);
    c->node.host_pool_bytes = *v;
  } else if (key == "data_dir") {
    c->node.data_dir = value;
  } else if (key == "disk") {
    auto v = ParseByteSize(value);
    if (!v.ok()) return v.status().WithContext(key);
    c->node.disk_bytes = *v;
  } else if (key == "write_through") {
    STRATA_ASSIGN_OR_RETURN(c->node.write_through, ParseBool(key, value));
  } else if (key == "eviction_policy") {
    if (value != "prefix" && value != "lru")
      return Status::InvalidArgument("eviction_policy: '" + value + "' (expected prefix or lru)");
    c->node.eviction_policy = value;
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
  } else if (key == "request_timeout_ms") {
    STRATA_ASSIGN_OR_RETURN(c->node.cluster.request_timeout_ms, ParseU32(key, value));
    if (c->node.cluster.request_timeout_ms == 0)
      return Status::InvalidArgument("request_timeout_ms: must be at least 1");
  } else if (key == "announce_interval_ms") {
    STRATA_ASSIGN_OR_RETURN(c->node.cluster.announce_interval_ms, ParseU32(key, value));
    if (c->node.cluster.announce_interval_ms == 0)
      return Status::InvalidArgument("announce_interval_ms: must be at least 1");
  } else {
    return Status::InvalidArgument("unknown setting '" + key + "'");
  }
  return Status::OK();
}

}  // namespace

Result<uint64_t> ParseByteSize(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  if (i == 0) return Status::InvalidArgument("'" + text + "' is not a size (e.g. 4GiB, 512M)");
  uint64_t n;
  try {
    n = std::stoull(text.substr(0, i));
  } catch (const std::exception&) {
    return Status::InvalidArgument("'" + text + "' is too large");
  }
  std::string unit = text.substr(i);
  while (!unit.empty() && unit.front() == ' ') unit.erase(unit.begin());
  uint64_t mult;
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "K" || unit == "KiB" || unit == "KB") mult = 1ull << 10;
  else if (unit == "M" || unit == "MiB" || unit == "MB") mult = 1ull << 20;
  else if (unit == "G" || unit == "GiB" || unit == "GB") mult = 1ull << 30;
  else if (unit == "T" || unit == "TiB" || unit == "TB") mult = 1ull << 40;
  else return Status::InvalidArgument("'" + text + "': unknown unit '" + unit + "'");
  if (n > UINT64_MAX / mult) return Status::InvalidArgument("'" + text + "' is too large");
  return n * mult;
}

Status ApplyConfigFile(const std::string& path, ServeConfig* config) {
  std::ifstream in(path);
  if (!in) return Status::IOError("cannot read config '" + path + "': " + std::strerror(errno));
  YAML::Node root;
  try {
    root = YAML::Load(in);
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument("config '" + path + "': " + e.what());
  }
  if (root.IsNull()) return Status::OK();
  if (!root.IsMap()) return Status::InvalidArgument("config '" + path + "': not a mapping");
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    if (!kv.second.IsScalar())
      return Status::InvalidArgument("config '" + path + "': '" + key + "' must be a scalar");
    STRATA_RETURN_IF_ERROR(Set(key, kv.second.as<std::string>(), config).WithContext("config '" + path + "'"));
  }
  return Status::OK();
}

Status ApplyEnvironment(const std::map<std::string, std::string>& env, ServeConfig* config) {
  static const std::pair<const char*, const char*> kVars[] = {
      {"STRATA_SOCKET", "socket"},         {"STRATA_HOST_POOL", "host_pool"},
      {"STRATA_DATA_DIR", "data_dir"},     {"STRATA_DISK", "disk"},
      {"STRATA_WRITE_THROUGH", "write_through"}, {"STRATA_EVICTION_POLICY", "eviction_policy"},
      {"STRATA_PIN_MS", "pin_ms"},         {"STRATA_MAX_CLIENTS", "max_clients"},
      {"STRATA_MEMBERSHIP", "membership"}, {"STRATA_NODE_ID", "node_id"},
      {"STRATA_CLUSTER_SECRET", "cluster_secret"},
      {"STRATA_CLUSTER_SECRET_FILE", "cluster_secret_file"},
      {"STRATA_ETCD", "etcd"},             {"STRATA_ETCD_PREFIX", "etcd_prefix"},
      {"STRATA_ETCD_LEASE_TTL_S", "etcd_lease_ttl_s"},
      {"STRATA_STATIC_DIR", "static_dir"}, {"STRATA_STATIC_PEERS", "static_peers"},
      {"STRATA_UCX_TLS", "ucx_tls"},       {"STRATA_REQUEST_TIMEOUT_MS", "request_timeout_ms"},
      {"STRATA_ANNOUNCE_INTERVAL_MS", "announce_interval_ms"},
  };
  for (const auto& [var, key] : kVars) {
    auto it = env.find(var);
    if (it == env.end()) continue;
    STRATA_RETURN_IF_ERROR(Set(key, it->second, config).WithContext(std::string("environment ") + var));
  }
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
