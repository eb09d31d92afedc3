// The inspect endpoint (`strata serve --inspect-addr HOST:PORT`, docs/operations.md "Inspector,
// across hosts"): a cluster node answers `strata inspect` queries from other hosts over HTTP,
// each request and each reply authenticated with the cluster secret. `strata inspect --all`
// reaches a member on another host through the address it published in membership.
//
//   POST /v1/inspect
//     X-Strata-Time:  <unix ms>               (within kMaxClockSkew of the server's clock)
//     X-Strata-Nonce: <64 hex digits>         (never seen by the server in the last 2 minutes)
//     Authorization:  Strata-HMAC <64 hex>    = HMAC-SHA256(secret, "strata/1 inspect request\n"
//                                                time "\n" nonce "\n" body)
//     body: an ipc Request holding an InspectRequest (EncodeRequest, docs/client-protocol.md)
//   200: the inspector's JSON;  X-Strata-Mac: <64 hex> = HMAC-SHA256(secret,
//        "strata/1 inspect reply\n" request_mac "\n" body)
//   400 bad request, 401 not authenticated (a reason in the body, no key-level data), 403 an
//   inspect command the node refuses, 503 not serving yet.
//
// The secret never travels; a recorded request cannot be replayed (nonce and time window), nor a
// reply forged. Replies are not encrypted: what they show (keys, namespace fingerprints without
// salts, sizes) crosses the network in clear; serve the endpoint on a management network.
//
// Thread-safety: the server's handler runs on cpp-httplib's threads; InspectHttpClient is for one
// thread at a time.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "ipc/ipc_protocol.h"
#include "strata/result.h"

namespace strata {

class Node;

// The cluster secret as a node loads it (ClusterOptions: secret, $STRATA_CLUSTER_SECRET,
// secret_file; first match wins). InvalidArgument when none gives one of 16 bytes or more.
Result<std::string> LoadInspectSecret(const std::string& value, const std::string& file);

class InspectServer {
 public:
  static constexpr std::chrono::seconds kMaxClockSkew{30};

  // Binds `address` ("HOST:PORT"; port 0 picks a free one) and serves. The node may be attached
  // later (SetNode): until then requests get 503. InvalidArgument for a bad address or a secret
  // under 16 bytes; IOError when the address cannot be bound.
  static Result<std::unique_ptr<InspectServer>> Start(const std::string& address,
                                                      std::string secret);
  ~InspectServer();

  // REQUIRES: `node` outlives the server (or Stop() is called first).
  void SetNode(Node* node) { node_.store(node); }
  void Stop();

  // "HOST:PORT" as published in membership: the bound port; a wildcard host (0.0.0.0) is
  // replaced by `wildcard_host`.
  std::string PublishedAddress(const std::string& wildcard_host) const;
  const std::string& host() const { return host_; }
  int port() const { return port_; }

 private:
  class Impl;
  InspectServer() = default;
  std::unique_ptr<Impl> impl_;
  std::atomic<Node*> node_{nullptr};
  std::string host_;
  int port_ = 0;
};

// Asks one node's inspect endpoint.
class InspectHttpClient {
 public:
  // `address`: "HOST:PORT"; `secret`: the cluster secret; `timeout_ms` bounds each answer (<= 0:
  // unbounded, connecting and sending still bounded by 10 s).
  InspectHttpClient(std::string address, std::string secret, int timeout_ms);
  ~InspectHttpClient();

  // The node's JSON answer. Unavailable when it cannot be reached; PermissionDenied when it
  // refused our authentication or its reply fails ours (not a member of this cluster);
  // the node's error otherwise.
  Result<std::string> Ask(const ipc::InspectRequest& request);

 private:
  std::string address_;
  std::string secret_;
  int timeout_ms_;
};

}  // namespace strata
