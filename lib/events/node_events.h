// NodeEvents: a node's KV-event endpoints (docs/kv-events.md) behind one object: the publisher of
// the blocks its tiers gain and lose (kv_event_publisher.h) and the subscriber to its engines'
// events (engine_events.h), each optional, and their statistics for Node::StatsJson.
//
// Thread-safety: every method may be called from any thread. OnTierChange is the store's
// on_tier_change hook: it takes one short mutex and never blocks on the network.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "events/engine_events.h"
#include "events/kv_event_publisher.h"
#include "strata/block_key.h"
#include "strata/result.h"
#include "strata/tier.h"

namespace strata::events {

class NodeEvents {
 public:
  // Null when both are off (no kv_events endpoint, no engine).
  static Result<std::shared_ptr<NodeEvents>> Open(const KvEventsOptions& kv_events,
                                                  const EngineEventsOptions& engine_events);

  void OnTierChange(Tier tier, const BlockKey& key, bool added, std::string_view tag) {
    if (!publisher_) return;
    added ? publisher_->RecordStored(tier, key, tag) : publisher_->RecordRemoved(tier, key, tag);
  }
  // A clear of every namespace left the store empty.
  void OnAllCleared() {
    if (publisher_) publisher_->RecordAllCleared();
  }

  // {"kv_events": {...}} and/or {"engines": [...]}: a JSON object to merge into the node's.
  std::string StatsJson() const;

  KvEventPublisher* publisher() const { return publisher_.get(); }
  EngineEvents* engines() const { return engines_.get(); }

 private:
  std::unique_ptr<KvEventPublisher> publisher_;
  std::unique_ptr<EngineEvents> engines_;
};

}  // namespace strata::events
