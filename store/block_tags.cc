#include "store/block_tags.h"

namespace strata::store {
namespace {

uint8_t Bit(TierKind tier) { return static_cast<uint8_t>(1u << static_cast<unsigned>(tier)); }

}  // namespace

void BlockTags::Set(const BlockKey& key, std::string_view tag) {
  if (tag.empty()) return;
  Stripe& s = StripeOf(key);
  std::lock_guard lock(s.mu);
  auto [it, inserted] = s.map.try_emplace(key);
  if (inserted) {
    it->second.tag.assign(tag);
    count_.fetch_add(1, std::memory_order_relaxed);
  }
}

std::string BlockTags::Changed(TierKind tier, const BlockKey& key, bool added) {
  if (count_.load(std::memory_order_relaxed) == 0) return {};
  Stripe& s = StripeOf(key);
  std::lock_guard lock(s.mu);
  auto it = s.map.find(key);
  if (it == s.map.end()) return {};
  std::string tag = it->second.tag;
  if (added) {
    it->second.tiers |= Bit(tier);
  } else {
    it->second.tiers &= static_cast<uint8_t>(~Bit(tier));
    EraseIfFree(s, it);
  }
  return tag;
}

void BlockTags::Hold(const BlockKey& key) {
  if (count_.load(std::memory_order_relaxed) == 0) return;
  Stripe& s = StripeOf(key);
  std::lock_guard lock(s.mu);
  auto it = s.map.find(key);
  if (it != s.map.end()) ++it->second.holds;
}

void BlockTags::Release(const BlockKey& key) {
  if (count_.load(std::memory_order_relaxed) == 0) return;
  Stripe& s = StripeOf(key);
  std::lock_guard lock(s.mu);
  auto it = s.map.find(key);
  if (it == s.map.end() || it->second.holds == 0) return;
  --it->second.holds;
  EraseIfFree(s, it);
}

void BlockTags::DropIfUnheld(const BlockKey& key) {
  if (count_.load(std::memory_order_relaxed) == 0) return;
  Stripe& s = StripeOf(key);
  std::lock_guard lock(s.mu);
  auto it = s.map.find(key);
  if (it != s.map.end()) EraseIfFree(s, it);
}

std::string BlockTags::Get(const BlockKey& key) const {
  if (count_.load(std::memory_order_relaxed) == 0) return {};
  const Stripe& s = StripeOf(key);
  std::lock_guard lock(s.mu);
  auto it = s.map.find(key);
  return it == s.map.end() ? std::string() : it->second.tag;
}

void BlockTags::EraseIfFree(Stripe& s,
                            std::unordered_map<BlockKey, Entry, BlockKeyHash>::iterator it) {
  if (it->second.tiers != 0 || it->second.holds != 0) return;
  s.map.erase(it);
  count_.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace strata::store
