#include "mooncake_trace.h"

#include <cerrno>
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

namespace strata::bench {

Result<std::vector<TraceRequest>> ReadMooncakeTrace(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::IOError("cannot open trace '" + path + "': " + std::strerror(errno));
  std::vector<TraceRequest> out;
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto where = [&] { return path + ":" + std::to_string(line_no) + ": "; };
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) return Status::InvalidArgument(where() + "not JSON");
    if (!j.contains("hash_ids") || !j["hash_ids"].is_array())
      return Status::InvalidArgument(where() + "missing hash_ids array");
    TraceRequest r;
    auto get_u64 = [&](const char* field, uint64_t& dst) -> bool {
      if (!j.contains(field)) return true;
      if (!j[field].is_number_unsigned() && !j[field].is_number_integer()) return false;
      if (j[field].is_number_integer() && j[field].get<int64_t>() < 0) return false;
      dst = j[field].get<uint64_t>();
      return true;
    };
    if (!get_u64("timestamp", r.timestamp_ms) || !get_u64("input_length", r.input_length) ||
        !get_u64("output_length", r.output_length))
      return Status::InvalidArgument(where() + "timestamp/input_length/output_length must be "
                                               "non-negative integers");
    r.hash_ids.reserve(j["hash_ids"].size());
    for (const auto& id : j["hash_ids"]) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0)
        return Status::InvalidArgument(where() + "hash_ids must be non-negative integers");
      r.hash_ids.push_back(id.get<uint64_t>());
    }
    if (!j.contains("input_length")) r.input_length = r.hash_ids.size() * kMooncakeBlockTokens;
    out.push_back(std::move(r));
  }
  if (in.bad()) return Status::IOError("error reading trace '" + path + "'");
  return out;
}

std::vector<uint32_t> SynthesizeTokens(const TraceRequest& req, uint32_t vocab_size) {
  auto splitmix = [](uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
  };
  uint64_t n = std::min<uint64_t>(req.input_length, req.hash_ids.size() * kMooncakeBlockTokens);
  std::vector<uint32_t> tokens(n);
  for (uint64_t t = 0; t < n; ++t) {
    uint64_t id = req.hash_ids[t / kMooncakeBlockTokens];
    tokens[t] = static_cast<uint32_t>(splitmix(id * kMooncakeBlockTokens + t % kMooncakeBlockTokens) %
                                      vocab_size);
  }
  return tokens;
}

std::string DefaultTracePath() { return STRATA_SOURCE_DIR "/tests/data/mooncake_synthetic_trace.jsonl"; }

}  // namespace strata::bench
