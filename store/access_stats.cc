#include "store/access_stats.h"

#include <mutex>

namespace strata::store {
namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;

size_t Index(::strata::Tier s) { return TierRank(s); }

}  // namespace

uint64_t AccessSnapshot::Misses(::strata::Tier source) const {
  uint64_t found = 0;
  for (size_t i = 0; i <= Index(source); ++i) found += hits[i];
  return lookup_blocks - found;
}

AccessStats::AccessStats(size_t max_namespaces) : max_namespaces_(max_namespaces) {
  namespaces_.reserve(max_namespaces_);  // the table never reallocates under the lock
}

NamespaceCounts& AccessStats::CountsOf(const NamespaceId& ns) {
  for (auto& [id, counts] : namespaces_)
    if (id == ns) return counts;
  if (namespaces_.size() < max_namespaces_)
    return namespaces_.emplace_back(ns, NamespaceCounts{}).second;
  return other_;
}

void AccessStats::RecordLookup(const std::optional<NamespaceId>& ns, std::span<const ::strata::Tier> where,
                               size_t asked) {
  const uint64_t hit = where.size();
  const uint64_t miss = asked - hit;
  lookups_.fetch_add(1, kRelaxed);
  lookup_blocks_.fetch_add(asked, kRelaxed);
  if (hit == 0) empty_lookups_.fetch_add(1, kRelaxed);
  std::array<uint64_t, kNumSources> by_source{};
  for (::strata::Tier s : where) ++by_source[Index(s)];
  for (size_t i = 0; i < kNumSources; ++i)
    if (by_source[i] != 0) hits_[i].fetch_add(by_source[i], kRelaxed);
  std::lock_guard lock(ns_mu_);
  NamespaceCounts& c = ns ? CountsOf(*ns) : unattributed_;
  c.hits += hit;
  c.misses += miss;
}

void AccessStats::RecordServed(const NamespaceId& ns, ::strata::Tier source, uint64_t bytes) {
  served_blocks_[Index(source)].fetch_add(1, kRelaxed);
  served_bytes_[Index(source)].fetch_add(bytes, kRelaxed);
  std::lock_guard lock(ns_mu_);
  NamespaceCounts& c = CountsOf(ns);
  ++c.blocks_served;
  c.bytes_served += bytes;
}

void AccessStats::RecordStored(const NamespaceId& ns, uint64_t bytes) {
  std::lock_guard lock(ns_mu_);
  NamespaceCounts& c = CountsOf(ns);
  ++c.blocks_stored;
  c.bytes_stored += bytes;
}

AccessSnapshot AccessStats::Snapshot() const {
  AccessSnapshot s;
  s.lookups = lookups_.load(kRelaxed);
  s.empty_lookups = empty_lookups_.load(kRelaxed);
  s.lookup_blocks = lookup_blocks_.load(kRelaxed);
  for (size_t i = 0; i < kNumSources; ++i) {
    s.hits[i] = hits_[i].load(kRelaxed);
    s.served_blocks[i] = served_blocks_[i].load(kRelaxed);
    s.served_bytes[i] = served_bytes_[i].load(kRelaxed);
  }
  // Read apart, so keep the identities exact in the snapshot: hits by tier sum to hit_blocks.
  uint64_t hit_sum = 0;
  for (uint64_t h : s.hits) hit_sum += h;
  s.hit_blocks = hit_sum;
  if (s.lookup_blocks < s.hit_blocks) s.lookup_blocks = s.hit_blocks;
  s.miss_blocks = s.lookup_blocks - s.hit_blocks;
  std::lock_guard lock(ns_mu_);
  s.namespaces = namespaces_;
  s.other = other_;
  s.unattributed = unattributed_;
  return s;
}

}  // namespace strata::store
