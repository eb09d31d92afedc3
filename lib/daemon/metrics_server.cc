#include "daemon/metrics_server.h"

#include <chrono>
#include <thread>

#include <httplib.h>

#include "daemon/daemon.h"
#include "daemon/metrics.h"
#include "node/node.h"

namespace strata {

class MetricsServer::Impl {
 public:
  httplib::Server server;
  std::thread thread;
};

Result<std::pair<std::string, int>> ParseHostPort(const std::string& address,
                                                  std::string_view what) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 == address.size())
    return Status::InvalidArgument(std::string(what) + " '" + address +
                                   "' is not HOST:PORT (e.g. 127.0.0.1:9464)");
  std::string host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (host.empty()) host = "127.0.0.1";
  int port = 0;
  try {
    size_t used = 0;
    const std::string p = address.substr(colon + 1);
    port = std::stoi(p, &used);
    if (used != p.size() || port < 0 || port > 65535) throw std::out_of_range(p);
  } catch (const std::exception&) {
    return Status::InvalidArgument(std::string(what) + " '" + address +
                                   "': the port is not a number in 0..65535");
  }
  return std::make_pair(host, port);
}

Result<std::unique_ptr<MetricsServer>> MetricsServer::Start(MetricsServerOptions options) {
  auto hp = ParseHostPort(options.address, "metrics address");
  if (!hp.ok()) return hp.status();
  auto [host, port] = *hp;
  std::unique_ptr<MetricsServer> out(new MetricsServer());
  out->impl_ = std::make_unique<Impl>();
  httplib::Server& srv = out->impl_->server;
  auto render = options.render;
  auto ready = options.ready;
  srv.Get("/metrics", [render](const httplib::Request&, httplib::Response& res) {
    res.set_content(render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  srv.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  srv.Get("/readyz", [ready](const httplib::Request&, httplib::Response& res) {
    const bool ok = !ready || ready();
    res.status = ok ? 200 : 503;
    res.set_content(ok ? "ready\n" : "not ready\n", "text/plain");
  });
  if (port == 0) {
    port = srv.bind_to_any_port(host);
    if (port < 0) return Status::IOError("metrics: cannot bind " + host + " to any port");
  } else if (!srv.bind_to_port(host, port)) {
    return Status::IOError("metrics: cannot bind " + options.address +
                           " (in use, or not an address of this host)");
  }
  out->host_ = host;
  out->port_ = port;
  out->impl_->thread = std::thread([&srv] { srv.listen_after_bind(); });
  // Stop() before the thread is listening would be lost (httplib stops only a running server).
  for (int i = 0; i < 2000 && !srv.is_running(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return out;
}

MetricsServer::~MetricsServer() { Stop(); }

void MetricsServer::Stop() {
  if (!impl_) return;
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
  impl_.reset();
}

Result<std::unique_ptr<MetricsServer>> StartDaemonMetrics(const std::string& address, Node* node,
                                                          Daemon* daemon,
                                                          const std::atomic<bool>* ready) {
  const auto started = std::chrono::steady_clock::now();
  MetricsServerOptions o;
  o.address = address;
  o.render = [node, daemon, started] {
    metrics::DaemonGauges g;
    g.active_sessions = daemon->active_sessions();
    g.sessions_served = daemon->sessions_served();
    g.refused = daemon->refused();
    g.uptime_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    return metrics::RenderPrometheus(node->StatsJson(), g);
  };
  o.ready = [ready] { return ready->load(); };
  return MetricsServer::Start(std::move(o));
}

}  // namespace strata
