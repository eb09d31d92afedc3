#include "node/namespace_registry.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace strata {
namespace {

nlohmann::json SpecJson(const NamespaceSpec& s) {
  return {{"model_id", s.model_id},
          {"model_revision", s.model_revision},
          {"kv_dtype", static_cast<int>(s.kv_dtype)},
          {"attention", static_cast<int>(s.attention)},
          {"num_layers", s.num_layers},
          {"num_kv_heads", s.num_kv_heads},
          {"head_dim", s.head_dim},
          {"block_size", s.block_size},
          {"codec", static_cast<int>(s.codec)},
          {"lora_id", s.lora_id},
          {"tenant_salt", s.tenant_salt},
          {"key_scheme", static_cast<int>(s.key_scheme)},
          {"hash_seed", s.hash_seed}};
}

NamespaceSpec SpecFromJson(const nlohmann::json& j) {
  NamespaceSpec s;
  s.model_id = j.at("model_id").get<std::string>();
  s.model_revision = j.at("model_revision").get<std::string>();
  s.kv_dtype = static_cast<KvDtype>(j.at("kv_dtype").get<int>());
  s.attention = static_cast<AttentionKind>(j.at("attention").get<int>());
  s.num_layers = j.at("num_layers").get<uint32_t>();
  s.num_kv_heads = j.at("num_kv_heads").get<uint32_t>();
  s.head_dim = j.at("head_dim").get<uint32_t>();
  s.block_size = j.at("block_size").get<uint32_t>();
  s.codec = static_cast<Codec>(j.at("codec").get<int>());
  s.lora_id = j.at("lora_id").get<std::string>();
  s.tenant_salt = j.at("tenant_salt").get<std::string>();
  s.key_scheme = static_cast<KeyScheme>(j.at("key_scheme").get<int>());
  s.hash_seed = j.at("hash_seed").get<std::string>();
  return s;
}

}  // namespace

NamespaceRegistry::NamespaceRegistry(std::string path) : path_(std::move(path)) {
  if (path_.empty()) return;
  auto entries = ReadFile(path_);
  if (entries.ok()) entries_ = std::move(entries).value();
}

bool NamespaceRegistry::Describe(const NamespaceId& claimed, const NamespaceSpec& spec) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const Entry& e : entries_)
      if (e.id == claimed) return true;
  }
  auto ns = Namespace::Create(spec);
  std::lock_guard<std::mutex> lock(mu_);
  if (!ns.ok() || ns->id() != claimed) {
    ++mismatches_;
    return false;
  }
  for (const Entry& e : entries_)
    if (e.id == claimed) return true;
  if (entries_.size() >= kMaxNamespaces) return true;
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  entries_.push_back({claimed, ns->spec(), now});
  SaveLocked();
  return true;
}

std::vector<NamespaceRegistry::Entry> NamespaceRegistry::Entries() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_;
}

std::optional<NamespaceSpec> NamespaceRegistry::Find(const NamespaceId& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const Entry& e : entries_)
    if (e.id == id) return e.spec;
  return std::nullopt;
}

uint64_t NamespaceRegistry::mismatches() const {
  std::lock_guard<std::mutex> lock(mu_);
  return mismatches_;
}

// Written to a temporary file and renamed over the old one, so a crash leaves either version.
void NamespaceRegistry::SaveLocked() {
  if (path_.empty()) return;
  nlohmann::json j = {{"schema_version", 1}, {"namespaces", nlohmann::json::array()}};
  for (const Entry& e : entries_) {
    nlohmann::json n = SpecJson(e.spec);
    n["id"] = e.id.ToHex();
    n["first_seen_unix_s"] = e.first_seen_unix_s;
    j["namespaces"].push_back(std::move(n));
  }
  const std::string tmp = path_ + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return;  // the registry still serves from memory
  const std::string text = j.dump(1) + "\n";
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  if (ok) std::rename(tmp.c_str(), path_.c_str());
  else std::remove(tmp.c_str());
}

Result<std::vector<NamespaceRegistry::Entry>> NamespaceRegistry::ReadFile(
    const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("no namespace registry at '" + path + "'");
  std::stringstream text;
  text << in.rdbuf();
  std::vector<Entry> out;
  try {
    const nlohmann::json j = nlohmann::json::parse(text.str());
    for (const auto& n : j.at("namespaces")) {
      Entry e;
      e.spec = SpecFromJson(n);
      auto ns = Namespace::Create(e.spec);
      if (!ns.ok() || ns->id().ToHex() != n.at("id").get<std::string>()) continue;
      e.id = ns->id();
      e.spec = ns->spec();
      e.first_seen_unix_s = n.value("first_seen_unix_s", int64_t{0});
      out.push_back(std::move(e));
    }
  } catch (const std::exception& e) {
    return Status::Corruption("namespace registry '" + path + "': " + e.what());
  }
  return out;
}

std::vector<std::string> RedactedDifferences(const NamespaceSpec& ours,
                                             const NamespaceSpec& theirs) {
  std::vector<std::string> out = FingerprintDifferences(ours, theirs);
  for (std::string& line : out)
    if (line.rfind("tenant_salt", 0) == 0) line = "tenant_salt: differs";
  return out;
}

}  // namespace strata
