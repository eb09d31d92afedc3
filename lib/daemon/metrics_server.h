// The daemon's HTTP endpoint for operators (`strata serve --metrics-addr HOST:PORT`,
// docs/operations.md "Metrics"): GET /metrics (Prometheus text, daemon/metrics.h), /healthz
// (200 while the process serves HTTP) and /readyz (200 once the daemon accepts clients and until
// it stops; 503 otherwise). Served by cpp-httplib on its own threads; nothing else is served.
//
// Thread-safety: Start/Stop from one thread; the callbacks run on the server's threads.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "strata/result.h"

namespace strata {

struct MetricsServerOptions {
  // "HOST:PORT" (an IPv4 address or name; port 0 picks a free one) or ":PORT" (loopback,
  // 127.0.0.1). REQUIRES: non-empty.
  std::string address;
  // The body of /metrics. REQUIRES: set.
  std::function<std::string()> render;
  // True when /readyz should answer 200. Default: always ready.
  std::function<bool()> ready;
};

// "HOST:PORT" (an IPv4 address or name, "[v6]" unbracketed; port 0..65535) or ":PORT"
// (127.0.0.1) as {host, port}: the operator endpoints' listen addresses. InvalidArgument naming
// `what` otherwise.
Result<std::pair<std::string, int>> ParseHostPort(const std::string& address,
                                                  std::string_view what);

class MetricsServer {
 public:
  // Binds and starts serving. InvalidArgument for an address that does not parse, IOError when
  // it cannot be bound.
  static Result<std::unique_ptr<MetricsServer>> Start(MetricsServerOptions options);
  ~MetricsServer();
  void Stop();
  // The bound port (the one chosen, for port 0).
  int port() const { return port_; }
  const std::string& host() const { return host_; }

 private:
  class Impl;
  MetricsServer() = default;
  std::unique_ptr<Impl> impl_;
  std::string host_;
  int port_ = 0;
};

class Node;
class Daemon;

// The daemon's endpoint: /metrics renders `node`'s statistics, the request metrics and
// `daemon`'s session counts; /readyz is 200 until `ready` turns false. REQUIRES: node, daemon
// and ready outlive the server.
Result<std::unique_ptr<MetricsServer>> StartDaemonMetrics(const std::string& address, Node* node,
                                                          Daemon* daemon,
                                                          const std::atomic<bool>* ready);

}  // namespace strata
