// EngineEvents: subscribes to serving engines' vLLM KV events (kv_event.h, docs/kv-events.md)
// and keeps, per engine, the set of block hashes it holds on each medium ("GPU" for vLLM's own
// prefix cache), so that the node and `strata inspect` know which prefixes each engine holds.
//
//  - One SUB socket per engine (connected, or bound for an endpoint with '*', as vLLM's rule),
//    served by one thread for all engines.
//  - Sequence numbers must grow by one. On a gap the subscriber asks the engine's replay endpoint
//    (a DEALER speaking vLLM's ROUTER protocol) for the missing batches and applies them in order;
//    when there is no replay endpoint, or the engine no longer keeps the missing batches, the gap
//    is counted as unrecovered and the engine's view is flagged `stale` (it may miss blocks)
//    until the engine clears its cache (AllBlocksCleared). The first batch seen asks for a replay
//    from 0 to learn the engine's history, when a replay endpoint is configured; a first batch
//    with seq > 0 that cannot be replayed flags the view stale too.
//  - A batch numbered 0 after later ones means the engine restarted: its view is emptied first.
//  - A batch that does not decode is counted (`decode_errors`) and skipped like a gap.
//
// Thread-safety: every method may be called from any thread. Ownership: owns its ZMQ context,
// sockets and thread; the destructor joins.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "events/kv_event.h"
#include "strata/result.h"

namespace strata::events {

struct EngineEndpoint {
  // Name in statistics. Default: "engine<i>".
  std::string name;
  // The engine's PUB endpoint (vLLM's kv_events_config.endpoint, e.g. tcp://host:5557).
  std::string endpoint;
  // The engine's ROUTER replay endpoint (vLLM's replay_endpoint); empty: none.
  std::string replay_endpoint;
  // Topic to subscribe to (vLLM's topic). Default: "" (every message).
  std::string topic;
};

struct EngineEventsOptions {
  std::vector<EngineEndpoint> engines;
  // Longest wait for a replay's end marker. Default: 1000 ms.
  uint32_t replay_timeout_ms = 1000;
};

// One engine's state, as statistics show it.
struct EngineView {
  std::string name;
  std::string endpoint;
  std::string replay_endpoint;
  std::optional<uint64_t> last_seq;  // last batch applied
  uint64_t batches = 0;              // batches applied (live and replayed)
  uint64_t events = 0;
  uint64_t blocks_stored = 0;        // block hashes in BlockStored events applied
  uint64_t blocks_removed = 0;
  uint64_t clears = 0;               // AllBlocksCleared applied
  uint64_t gaps = 0;                 // sequence gaps seen
  uint64_t replay_requests = 0;
  uint64_t replayed_batches = 0;     // batches recovered through replay
  uint64_t unrecovered_gaps = 0;     // gaps replay could not fill
  uint64_t restarts = 0;             // sequence restarted at 0
  uint64_t decode_errors = 0;
  bool stale = false;                // the held sets may miss blocks (see the file comment)
  std::map<std::string, uint64_t> held_blocks;  // medium -> blocks held now
};

class EngineEvents {
 public:
  // Opens a SUB socket per engine. InvalidArgument for no engines or an empty endpoint; IOError
  // when ZMQ refuses an endpoint.
  static Result<std::unique_ptr<EngineEvents>> Open(const EngineEventsOptions& options);
  ~EngineEvents();
  EngineEvents(const EngineEvents&) = delete;
  EngineEvents& operator=(const EngineEvents&) = delete;

  std::vector<EngineView> Snapshot() const;
  // Whether `engine` holds `hash` on `medium`. False for an unknown engine.
  bool Holds(std::string_view engine, const ExternalBlockHash& hash,
             std::string_view medium = "GPU") const;
  // How many leading hashes of `chain` `engine` holds on `medium` (a prefix held on its GPU).
  size_t HeldPrefix(std::string_view engine, std::span<const ExternalBlockHash> chain,
                    std::string_view medium = "GPU") const;

 private:
  class Impl;
  explicit EngineEvents(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Parses a setting value: comma-separated engines, each `[NAME=]ENDPOINT[|REPLAY_ENDPOINT]`,
// e.g. "vllm0=tcp://10.0.0.5:5557|tcp://10.0.0.5:5558". InvalidArgument naming the bad entry.
Result<std::vector<EngineEndpoint>> ParseEngineEndpoints(const std::string& value);

}  // namespace strata::events
