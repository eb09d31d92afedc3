#include "daemon/inspect_http.h"

#include <chrono>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <unordered_map>

#include <httplib.h>

#include "daemon/log.h"
#include "daemon/metrics_server.h"
#include "node/node.h"
#include "transport/wire/auth.h"

namespace strata {
namespace {

constexpr std::string_view kRequestLabel = "strata/1 inspect request\n";
constexpr std::string_view kReplyLabel = "strata/1 inspect reply\n";
constexpr size_t kMaxBodyBytes = 64 << 20;  // a prefix query of ~16 M tokens

std::string Hex(std::span<const std::byte> bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (std::byte b : bytes) {
    out.push_back(kDigits[std::to_integer<unsigned>(b) >> 4]);
    out.push_back(kDigits[std::to_integer<unsigned>(b) & 15]);
  }
  return out;
}

std::optional<std::vector<std::byte>> Unhex(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  std::vector<std::byte> out(hex.size() / 2);
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < out.size(); ++i) {
    const int hi = digit(hex[2 * i]), lo = digit(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out[i] = static_cast<std::byte>(hi * 16 + lo);
  }
  return out;
}

std::string RequestMessage(std::string_view time, std::string_view nonce, std::string_view body) {
  std::string m(kRequestLabel);
  m.append(time).append("\n").append(nonce).append("\n").append(body);
  return m;
}

std::string ReplyMessage(std::string_view request_mac, std::string_view body) {
  std::string m(kReplyLabel);
  m.append(request_mac).append("\n").append(body);
  return m;
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Nonces seen within the replay window (twice the clock skew allowed).
class NonceLog {
 public:
  // False when `nonce` was seen in the window (a replay).
  bool Insert(const std::string& nonce, int64_t now_ms) {
    std::lock_guard<std::mutex> lock(mu_);
    const int64_t window = 2 * std::chrono::milliseconds(InspectServer::kMaxClockSkew).count();
    if (seen_.size() > 4096) std::erase_if(seen_, [&](const auto& e) {
      return e.second < now_ms - window;
    });
    return seen_.emplace(nonce, now_ms).second;
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::string, int64_t> seen_;  // GUARDED_BY(mu_)
};

}  // namespace

Result<std::string> LoadInspectSecret(const std::string& value, const std::string& file) {
  return wire::LoadClusterSecret(wire::ClusterSecretSource{value, "STRATA_CLUSTER_SECRET", file});
}

class InspectServer::Impl {
 public:
  httplib::Server server;
  std::thread thread;
  std::string secret;
  NonceLog nonces;
};

Result<std::unique_ptr<InspectServer>> InspectServer::Start(const std::string& address,
                                                            std::string secret) {
  if (secret.size() < 16)
    return Status::InvalidArgument("inspect endpoint: the cluster secret is under 16 bytes");
  auto hp = ParseHostPort(address, "inspect address");
  if (!hp.ok()) return hp.status();
  auto [host, port] = *hp;
  std::unique_ptr<InspectServer> out(new InspectServer());
  out->impl_ = std::make_unique<Impl>();
  Impl* impl = out->impl_.get();
  impl->secret = std::move(secret);
  InspectServer* self = out.get();
  httplib::Server& srv = impl->server;
  srv.set_payload_max_length(kMaxBodyBytes);
  srv.Post("/v1/inspect", [impl, self](const httplib::Request& req, httplib::Response& res) {
    auto refuse = [&](int status, const std::string& why) {
      res.status = status;
      res.set_content(why + "\n", "text/plain");
      log::WarnLimited("inspect_http_refused", "inspect_http_refused",
                       {{"remote", req.remote_addr}, {"status", std::to_string(status)},
                        {"reason", why}});
    };
    const std::string time = req.get_header_value("X-Strata-Time");
    const std::string nonce = req.get_header_value("X-Strata-Nonce");
    const std::string auth = req.get_header_value("Authorization");
    constexpr std::string_view kScheme = "Strata-HMAC ";
    if (time.empty() || nonce.size() != 64 || auth.rfind(kScheme, 0) != 0)
      return refuse(401, "not authenticated: X-Strata-Time, X-Strata-Nonce and "
                         "Authorization: Strata-HMAC are required");
    const std::string mac_hex = auth.substr(kScheme.size());
    auto mac = Unhex(mac_hex);
    if (!mac || !wire::VerifyMessageMac(impl->secret, RequestMessage(time, nonce, req.body), *mac))
      return refuse(401, "not authenticated: the MAC does not match (another cluster secret?)");
    char* end = nullptr;
    const long long sent = std::strtoll(time.c_str(), &end, 10);
    const int64_t now = NowMs();
    if (end == time.c_str() || *end != '\0' ||
        std::llabs(now - sent) > std::chrono::milliseconds(kMaxClockSkew).count())
      return refuse(401, "not authenticated: X-Strata-Time is more than 30 s from this node's "
                         "clock (synchronise the clocks)");
    if (!impl->nonces.Insert(nonce, now)) return refuse(401, "not authenticated: a replayed nonce");
    Node* node = self->node_.load();
    if (node == nullptr) return refuse(503, "the node is starting");
    auto decoded = ipc::DecodeRequest(std::as_bytes(std::span(req.body)));
    const ipc::InspectRequest* q =
        decoded.ok() ? std::get_if<ipc::InspectRequest>(&decoded->body) : nullptr;
    if (q == nullptr)
      return refuse(400, "the body is not an encoded InspectRequest" +
                             (decoded.ok() ? std::string() : ": " + decoded.status().ToString()));
    // A caller holding the cluster secret is an operator of the cluster: the admin view.
    auto answer = node->Inspect(*q, /*admin=*/true);
    if (!answer.ok()) {
      res.status = answer.status().code() == StatusCode::kPermissionDenied ? 403 : 400;
      res.set_content(answer.status().ToString() + "\n", "text/plain");
      return;
    }
    res.set_header("X-Strata-Mac",
                   Hex(wire::MessageMac(impl->secret, ReplyMessage(mac_hex, *answer))));
    res.set_content(std::move(answer).value(), "application/json");
    log::Write(log::Level::kDebug, "inspect_http",
               {{"remote", req.remote_addr}, {"command", q->command}});
  });
  if (port == 0) {
    port = srv.bind_to_any_port(host);
    if (port < 0) return Status::IOError("inspect endpoint: cannot bind " + host + " to any port");
  } else if (!srv.bind_to_port(host, port)) {
    return Status::IOError("inspect endpoint: cannot bind " + address +
                           " (in use, or not an address of this host)");
  }
  out->host_ = host;
  out->port_ = port;
  impl->thread = std::thread([&srv] { srv.listen_after_bind(); });
  for (int i = 0; i < 2000 && !srv.is_running(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return out;
}

InspectServer::~InspectServer() { Stop(); }

void InspectServer::Stop() {
  if (!impl_) return;
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
  impl_.reset();
}

std::string InspectServer::PublishedAddress(const std::string& wildcard_host) const {
  const bool wildcard = host_ == "0.0.0.0" || host_ == "::" || host_ == "*";
  return (wildcard ? wildcard_host : host_) + ":" + std::to_string(port_);
}

InspectHttpClient::InspectHttpClient(std::string address, std::string secret, int timeout_ms)
    : address_(std::move(address)), secret_(std::move(secret)), timeout_ms_(timeout_ms) {}

InspectHttpClient::~InspectHttpClient() = default;

Result<std::string> InspectHttpClient::Ask(const ipc::InspectRequest& request) {
  auto hp = ParseHostPort(address_, "inspect address");
  if (!hp.ok()) return hp.status();
  if (hp->second == 0) return Status::InvalidArgument("inspect address " + address_ + ": port 0");
  httplib::Client cli(hp->first, hp->second);
  // timeout_ms <= 0: the answer may take as long as it takes (a live verify); connecting and
  // sending the request are still bounded.
  const auto bounded = std::chrono::milliseconds(timeout_ms_ > 0 ? timeout_ms_ : 10000);
  cli.set_connection_timeout(bounded);
  cli.set_write_timeout(bounded);
  cli.set_read_timeout(timeout_ms_ > 0 ? bounded : std::chrono::hours(24));
  ipc::Request r;
  r.id = 1;
  r.body = request;
  const std::string body = ipc::EncodeRequest(r);
  const std::string time = std::to_string(NowMs());
  const std::string nonce = Hex(wire::RandomNonce());
  const std::string mac = Hex(wire::MessageMac(secret_, RequestMessage(time, nonce, body)));
  httplib::Headers headers = {{"X-Strata-Time", time},
                              {"X-Strata-Nonce", nonce},
                              {"Authorization", "Strata-HMAC " + mac}};
  auto res = cli.Post("/v1/inspect", headers, body, "application/octet-stream");
  if (!res)
    return Status::Unavailable("cannot reach the inspect endpoint " + address_ + ": " +
                               httplib::to_string(res.error()));
  std::string text = res->body;
  while (!text.empty() && text.back() == '\n') text.pop_back();
  if (res->status == 401)
    return Status::PermissionDenied("the inspect endpoint " + address_ + " refused us: " + text);
  if (res->status == 403) return Status::PermissionDenied(address_ + ": " + text);
  if (res->status != 200)
    return Status::Unavailable("the inspect endpoint " + address_ + " answered " +
                               std::to_string(res->status) + ": " + text);
  auto reply_mac = Unhex(res->get_header_value("X-Strata-Mac"));
  if (!reply_mac || !wire::VerifyMessageMac(secret_, ReplyMessage(mac, res->body), *reply_mac))
    return Status::PermissionDenied("the reply of " + address_ +
                                    " is not authenticated (not a node of this cluster)");
  return std::move(res->body);
}

}  // namespace strata
