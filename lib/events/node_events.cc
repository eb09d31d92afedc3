#include "events/node_events.h"

#include <nlohmann/json.hpp>

namespace strata::events {

Result<std::shared_ptr<NodeEvents>> NodeEvents::Open(const KvEventsOptions& kv_events,
                                                     const EngineEventsOptions& engine_events) {
  if (kv_events.endpoint.empty() && engine_events.engines.empty())
    return std::shared_ptr<NodeEvents>();
  auto out = std::make_shared<NodeEvents>();
  if (!kv_events.endpoint.empty()) {
    STRATA_ASSIGN_OR_RETURN(out->publisher_, KvEventPublisher::Open(kv_events));
  }
  if (!engine_events.engines.empty()) {
    STRATA_ASSIGN_OR_RETURN(out->engines_, EngineEvents::Open(engine_events));
  }
  return out;
}

std::string NodeEvents::StatsJson() const {
  nlohmann::json j = nlohmann::json::object();
  if (publisher_) {
    const KvEventsStats s = publisher_->stats();
    const KvEventsOptions& o = publisher_->options();
    j["kv_events"] = {{"endpoint", o.endpoint},
                      {"replay_endpoint", o.replay_endpoint},
                      {"next_seq", s.next_seq},
                      {"batches", s.batches},
                      {"blocks_stored", s.blocks_stored},
                      {"blocks_removed", s.blocks_removed},
                      {"clears", s.clears},
                      {"dropped", s.dropped},
                      {"send_errors", s.send_errors},
                      {"replay_requests", s.replay_requests},
                      {"replayed_batches", s.replayed_batches}};
  }
  if (engines_) {
    nlohmann::json list = nlohmann::json::array();
    for (const EngineView& v : engines_->Snapshot()) {
      nlohmann::json e = {{"name", v.name},
                          {"endpoint", v.endpoint},
                          {"replay_endpoint", v.replay_endpoint},
                          {"batches", v.batches},
                          {"events", v.events},
                          {"blocks_stored", v.blocks_stored},
                          {"blocks_removed", v.blocks_removed},
                          {"clears", v.clears},
                          {"gaps", v.gaps},
                          {"replay_requests", v.replay_requests},
                          {"replayed_batches", v.replayed_batches},
                          {"unrecovered_gaps", v.unrecovered_gaps},
                          {"restarts", v.restarts},
                          {"decode_errors", v.decode_errors},
                          {"stale", v.stale},
                          {"held_blocks", v.held_blocks}};
      e["last_seq"] = v.last_seq ? nlohmann::json(*v.last_seq) : nlohmann::json(nullptr);
      list.push_back(std::move(e));
    }
    j["engines"] = std::move(list);
  }
  return j.dump();
}

}  // namespace strata::events
