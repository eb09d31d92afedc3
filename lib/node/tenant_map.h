// TenantMap: which tenant the blocks of each namespace belong to (docs/data-plane.md, "Tenants").
// The daemon learns it when a client opens a namespace (it hashes the namespace's encoding itself
// and reads the salt from it), so an entry is a fact about the namespace, never a client's claim.
// The host tier asks it for every block it takes in without a tenant (promotions from disk and
// device, pulls from peers); a namespace nobody opened since start has no tenant, and such blocks
// stay where they are until a client of its tenant loads them.
//
// Thread-safety: thread-safe (a reader-writer lock; entries are added, never changed).
#pragma once

#include <cstddef>
#include <cstdint>
#include <shared_mutex>
#include <unordered_map>

#include "strata/block_key.h"
#include "strata/status.h"

namespace strata {

class TenantMap {
 public:
  // Entries kept at most; a namespace is 16 bytes, so this bounds the map to tens of MiB.
  static constexpr size_t kMaxNamespaces = size_t{1} << 20;
  static constexpr uint16_t kUnknown = UINT16_MAX;  // equals store::kNoTenant

  // Records `tenant` for `ns`. ResourceExhausted past kMaxNamespaces; Internal when `ns` is
  // recorded with another tenant (the caller derived the tenant from the namespace itself, so
  // this means a fingerprint collision).
  Status Set(const NamespaceId& ns, uint16_t tenant) {
    std::unique_lock lock(mu_);
    auto it = map_.find(ns);
    if (it != map_.end())
      return it->second == tenant ? Status::OK()
                                  : Status::Internal("namespace " + ns.ToHex() +
                                                     " is recorded with another tenant");
    if (map_.size() >= kMaxNamespaces)
      return Status::ResourceExhausted("this node knows " + std::to_string(map_.size()) +
                                       " namespaces, its maximum");
    map_.emplace(ns, tenant);
    return Status::OK();
  }
  uint16_t Get(const NamespaceId& ns) const {
    std::shared_lock lock(mu_);
    auto it = map_.find(ns);
    return it == map_.end() ? kUnknown : it->second;
  }

 private:
  mutable std::shared_mutex mu_;
  std::unordered_map<NamespaceId, uint16_t, BlockKeyHash> map_;
};

}  // namespace strata
