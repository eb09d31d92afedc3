// Helpers shared by the store tests: deterministic keys and payloads (so any process can recompute
// what a block must contain), and temporary directories.
//
// Thread-safety: the functions are pure; TempDir is a plain RAII value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "strata/block_format.h"
#include "strata/block_key.h"

namespace strata::store::testing {

// The i-th test key (distinct for distinct i, spread over the hash space).
BlockKey TestKey(uint64_t i, uint64_t salt = 0);
// `size` bytes determined by `key` alone.
std::vector<std::byte> TestPayload(const BlockKey& key, size_t size);
// A header for TestPayload(key, size) in a fixed test namespace.
BlockHeader TestHeader(const BlockKey& key, const std::vector<std::byte>& payload);
// True when `payload` is exactly TestPayload(key, payload.size()).
bool IsTestPayload(const BlockKey& key, const std::byte* payload, size_t size);

class TempDir {
 public:
  TempDir();  // a fresh directory under $TMPDIR or /tmp
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace strata::store::testing
