// NamespaceRegistry: the namespaces a node has seen described, by fingerprint, so that `strata
// inspect` can name a namespace's model, key scheme and layout (the daemon otherwise knows only
// the 128-bit ids in block headers) and flag namespaces that differ in one field.
//
// A client sends the spec behind a namespace id with its connection's first store of it
// (docs/client-protocol.md); Describe records it only when the spec fingerprints to that id, so
// a client cannot attach a false description to another namespace. The registry is persisted
// to `<data_dir>/namespaces.json` (mode 0600; it holds tenant salts, which name blocks, in the
// directory that holds the blocks themselves), so that a restarted daemon and the offline
// inspector know the namespaces of the blocks on disk. Salts never leave it: the inspector shows
// only whether a salt is present.
//
// Thread-safety: all methods are thread-safe.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "strata/namespace.h"
#include "strata/result.h"

namespace strata {

class NamespaceRegistry {
 public:
  // At most this many namespaces are recorded; later ones are not (counted in dropped()).
  static constexpr size_t kMaxNamespaces = 4096;

  struct Entry {
    NamespaceId id;
    NamespaceSpec spec;
    int64_t first_seen_unix_s = 0;
  };

  // `path`: the file to persist to and load from ("" = memory only). A missing or unreadable
  // file starts the registry empty.
  explicit NamespaceRegistry(std::string path);

  // Records `spec` as the namespace `claimed`. False (and counted in mismatches()) when the spec
  // is invalid or fingerprints to another id.
  bool Describe(const NamespaceId& claimed, const NamespaceSpec& spec);

  std::vector<Entry> Entries() const;
  std::optional<NamespaceSpec> Find(const NamespaceId& id) const;
  // Descriptions refused because they did not fingerprint to the id they came with.
  uint64_t mismatches() const;

  // The entries of a registry file (the offline inspector). NotFound when there is none.
  static Result<std::vector<Entry>> ReadFile(const std::string& path);

 private:
  void SaveLocked();  // REQUIRES_LOCK(mu_)

  const std::string path_;
  mutable std::mutex mu_;
  std::vector<Entry> entries_;  // GUARDED_BY(mu_)
  uint64_t mismatches_ = 0;     // GUARDED_BY(mu_)
};

// The fingerprint differences of FingerprintDifferences with tenant salts redacted ("tenant_salt:
// differs"): salts name blocks and are never shown.
std::vector<std::string> RedactedDifferences(const NamespaceSpec& ours,
                                             const NamespaceSpec& theirs);

}  // namespace strata
