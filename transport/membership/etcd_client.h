// EtcdClient: the few calls of etcd's v3 API that membership needs, spoken through etcd's JSON
// gateway (HTTP/1.1 + JSON, keys and values base64) with libcurl. Chosen over the gRPC API
// because it needs no generated gRPC stubs (Debian's libgrpc++ is large, and the gateway ships
// with every etcd >= 3.3); the gateway paths used are /v3/lease/grant, /v3/lease/keepalive,
// /v3/lease/revoke, /v3/kv/put, /v3/kv/range, /v3/kv/deleterange and /v3/watch.
//
// Internal to transport/membership/: it exposes nlohmann::json.
//
// Thread-safety: each call uses its own curl handle; one EtcdClient may be used from several
// threads at once.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "strata/result.h"
#include "strata/status.h"

namespace strata::transport {

struct EtcdKeyValue {
  std::string key;
  std::string value;
  int64_t lease = 0;
  int64_t mod_revision = 0;
};

struct EtcdEvent {
  bool deleted = false;  // DELETE (also when a lease expired); otherwise PUT
  EtcdKeyValue kv;
};

class EtcdClient {
 public:
  // `endpoint`: e.g. "http://127.0.0.1:2379". `timeout`: per unary call.
  EtcdClient(std::string endpoint, std::chrono::milliseconds timeout);

  // Grants a lease of `ttl_seconds`; returns its id.
  Result<int64_t> GrantLease(int64_t ttl_seconds);
  // Refreshes the lease; returns the TTL left. NotFound when the lease has expired.
  Result<int64_t> KeepAlive(int64_t lease);
  Status RevokeLease(int64_t lease);
  Status Put(const std::string& key, const std::string& value, int64_t lease);
  Status Delete(const std::string& key);
  // Every key with `prefix`; *revision gets the store revision the answer reflects.
  Result<std::vector<EtcdKeyValue>> RangePrefix(const std::string& prefix, int64_t* revision);
  // Watches keys with `prefix` from `start_revision` on, calling `on_event` per event, until
  // `stop` becomes true (checked at least every 100 ms) or the stream fails. Returns OK when
  // stopped, an error when the stream broke (the caller re-ranges and watches again).
  Status WatchPrefix(const std::string& prefix, int64_t start_revision,
                     const std::function<void(const EtcdEvent&)>& on_event,
                     const std::atomic<bool>& stop);

 private:
  Result<nlohmann::json> Post(const std::string& path, const nlohmann::json& body);

  std::string endpoint_;
  std::chrono::milliseconds timeout_;
};

// The key just past every key with `prefix` (etcd's range_end for a prefix query).
std::string PrefixRangeEnd(const std::string& prefix);

}  // namespace strata::transport
