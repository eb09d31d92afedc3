#include "transport/membership/etcd_client.h"

#include <curl/curl.h>

#include <cstdlib>
#include <mutex>

#include "transport/membership/membership.h"

namespace strata::transport {
namespace {

std::string B64(const std::string& s) {
  return Base64Encode(
      std::span<const std::byte>(reinterpret_cast<const std::byte*>(s.data()), s.size()));
}

std::string UnB64(const std::string& s) {
  auto b = Base64Decode(s);
  if (!b.ok()) return {};
  return std::string(reinterpret_cast<const char*>(b->data()), b->size());
}

// etcd's JSON gateway prints int64 values as strings.
int64_t Int(const nlohmann::json& j, const char* field) {
  if (!j.contains(field)) return 0;
  const auto& v = j[field];
  if (v.is_string()) return std::strtoll(v.get<std::string>().c_str(), nullptr, 10);
  if (v.is_number()) return v.get<int64_t>();
  return 0;
}

EtcdKeyValue ParseKv(const nlohmann::json& kv) {
  EtcdKeyValue out;
  out.key = UnB64(kv.value("key", ""));
  out.value = UnB64(kv.value("value", ""));
  out.lease = Int(kv, "lease");
  out.mod_revision = Int(kv, "mod_revision");
  return out;
}

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

size_t AppendBody(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

struct WatchState {
  std::string buffer;
  const std::function<void(const EtcdEvent&)>* on_event;
  const std::atomic<bool>* stop;
  Status error;
};

size_t WatchBody(char* data, size_t size, size_t n, void* user) {
  auto* w = static_cast<WatchState*>(user);
  w->buffer.append(data, size * n);
  // The gateway streams one JSON object per line.
  size_t pos;
  while ((pos = w->buffer.find('\n')) != std::string::npos) {
    std::string line = w->buffer.substr(0, pos);
    w->buffer.erase(0, pos + 1);
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) continue;
    if (j.contains("error")) {
      w->error = Status::Unavailable("etcd watch: " + j["error"].dump());
      return 0;  // aborts the transfer
    }
    const auto& result = j.contains("result") ? j["result"] : j;
    if (result.value("canceled", false)) {
      w->error = Status::Unavailable("etcd watch canceled: " + result.dump());
      return 0;
    }
    if (!result.contains("events")) continue;
    for (const auto& e : result["events"]) {
      EtcdEvent ev;
      ev.deleted = e.value("type", "PUT") == "DELETE";
      if (e.contains("kv")) ev.kv = ParseKv(e["kv"]);
      (*w->on_event)(ev);
    }
  }
  return size * n;
}

int WatchProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<WatchState*>(user)->stop->load() ? 1 : 0;
}

}  // namespace

std::string PrefixRangeEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

EtcdClient::EtcdClient(std::string endpoint, std::chrono::milliseconds timeout)
    : endpoint_(std::move(endpoint)), timeout_(timeout) {
  GlobalInit();
}

Result<nlohmann::json> EtcdClient::Post(const std::string& path, const nlohmann::json& body) {
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return Status::Internal("curl_easy_init failed");
  const std::string url = endpoint_ + path;
  const std::string payload = body.dump();
  std::string response;
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, payload.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, AppendBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &response);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout_.count()));
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  const CURLcode rc = curl_easy_perform(curl);
  long http = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &http);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  if (rc != CURLE_OK) return Status::Unavailable("etcd " + url + ": " + curl_easy_strerror(rc));
  // A streaming endpoint answers one JSON object per line; unary calls use the first.
  const std::string first = response.substr(0, response.find('\n'));
  auto j = nlohmann::json::parse(first, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded())
    return Status::Corruption("etcd " + url + ": answer is not JSON: " + first.substr(0, 200));
  if (http != 200 || j.contains("error")) {
    const std::string msg = j.contains("message") ? j["message"].get<std::string>()
                            : j.contains("error") ? j["error"].dump()
                                                  : first.substr(0, 200);
    if (msg.find("not found") != std::string::npos)
      return Status::NotFound("etcd " + path + ": " + msg);
    return Status::Unavailable("etcd " + path + " (HTTP " + std::to_string(http) + "): " + msg);
  }
  return j;
}

Result<int64_t> EtcdClient::GrantLease(int64_t ttl_seconds) {
  STRATA_ASSIGN_OR_RETURN(auto j, Post("/v3/lease/grant", {{"TTL", ttl_seconds}}));
  const int64_t id = Int(j, "ID");
  if (id == 0) return Status::Unavailable("etcd lease grant: no lease id in " + j.dump());
  return id;
}

Result<int64_t> EtcdClient::KeepAlive(int64_t lease) {
  STRATA_ASSIGN_OR_RETURN(auto j, Post("/v3/lease/keepalive", {{"ID", std::to_string(lease)}}));
  const auto& r = j.contains("result") ? j["result"] : j;
  const int64_t ttl = Int(r, "TTL");
  if (ttl <= 0) return Status::NotFound("etcd lease " + std::to_string(lease) + " has expired");
  return ttl;
}

Status EtcdClient::RevokeLease(int64_t lease) {
  auto r = Post("/v3/lease/revoke", {{"ID", std::to_string(lease)}});
  return r.ok() ? Status::OK() : r.status();
}

Status EtcdClient::Put(const std::string& key, const std::string& value, int64_t lease) {
  nlohmann::json body = {{"key", B64(key)}, {"value", B64(value)}};
  if (lease != 0) body["lease"] = std::to_string(lease);
  auto r = Post("/v3/kv/put", body);
  return r.ok() ? Status::OK() : r.status();
}

Status EtcdClient::Delete(const std::string& key) {
  auto r = Post("/v3/kv/deleterange", {{"key", B64(key)}});
  return r.ok() ? Status::OK() : r.status();
}

Result<std::vector<EtcdKeyValue>> EtcdClient::RangePrefix(const std::string& prefix,
                                                          int64_t* revision) {
  STRATA_ASSIGN_OR_RETURN(
      auto j,
      Post("/v3/kv/range", {{"key", B64(prefix)}, {"range_end", B64(PrefixRangeEnd(prefix))}}));
  std::vector<EtcdKeyValue> out;
  if (j.contains("kvs"))
    for (const auto& kv : j["kvs"]) out.push_back(ParseKv(kv));
  if (revision && j.contains("header")) *revision = Int(j["header"], "revision");
  return out;
}

Status EtcdClient::WatchPrefix(const std::string& prefix, int64_t start_revision,
                               const std::function<void(const EtcdEvent&)>& on_event,
                               const std::atomic<bool>& stop) {
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return Status::Internal("curl_easy_init failed");
  nlohmann::json create = {{"key", B64(prefix)}, {"range_end", B64(PrefixRangeEnd(prefix))}};
  if (start_revision > 0) create["start_revision"] = std::to_string(start_revision);
  const std::string payload = nlohmann::json{{"create_request", create}}.dump();
  const std::string url = endpoint_ + "/v3/watch";
  WatchState state;
  state.on_event = &on_event;
  state.stop = &stop;
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, payload.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, WatchBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &state);
  curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, WatchProgress);
  curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &state);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(timeout_.count()));
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  const CURLcode rc = curl_easy_perform(curl);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  if (stop.load()) return Status::OK();
  if (!state.error.ok()) return state.error;
  if (rc != CURLE_OK)
    return Status::Unavailable("etcd watch: " + std::string(curl_easy_strerror(rc)));
  return Status::Unavailable("etcd watch: the stream ended");
}

}  // namespace strata::transport
