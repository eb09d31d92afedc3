// KvEventPublisher: publishes the blocks Strata's tiers gain and lose as vLLM KV events
// (kv_event.h, docs/kv-events.md) on a ZMQ PUB socket, with vLLM's replay protocol on a ROUTER
// socket, so that a router that reads vLLM's event stream sees Strata's host and disk tiers as
// more media of the same engine.
//
//  - Record* calls come from the store's threads (commits, evictions, erasures). They append to
//    a bounded in-memory buffer under a short mutex and never touch the network: a slow or absent
//    subscriber never blocks a store. When max_pending_events are waiting, further events are
//    dropped and counted (`dropped`); a router then under-reports Strata's cache, never
//    over-reports it for long (the next removal or clear corrects it).
//  - The publisher thread wakes every batch_interval_ms, groups consecutive events of one kind
//    and tier into one BlockStored / BlockRemoved (as vLLM groups a request's blocks), encodes one
//    EventBatch and sends (topic, seq as 8 bytes big-endian, batch) without blocking (the PUB
//    socket drops at its high-water mark). Sequence numbers start at 0 and grow by one per batch.
//  - The last replay_batches batches are kept. A replay request on the ROUTER socket,
//    (identity, "", start seq 8 bytes big-endian), is answered as vLLM 0.33 answers it: with
//    (identity, "", topic, seq, batch) for every kept batch with seq >= start, then
//    (identity, "", "", -1 as 8 bytes, "").
//
// Block hashes: for a block whose tag (block_tag.h, the store's PutOptions::tag) names an engine
// block, the engine's own hash, parent, tokens and block size, as vLLM publishes them
// (PublishedEngineHash); a secondary head shard's tag publishes nothing. For any other block its
// Strata key (16 bytes, canonical form); for the `strata` key scheme the key is the scheme's block
// hash (docs/keys.md). With int_hashes (vLLM's default, VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=1) the
// low 64 bits of the hash bytes read big-endian; otherwise the hash bytes.
//
// Thread-safety: Record*, Flush and stats may be called from any thread. Ownership: owns its
// ZMQ context, sockets and thread; the destructor publishes what is pending and joins.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "events/kv_event.h"
#include "strata/block_key.h"
#include "strata/result.h"
#include "strata/tier.h"

namespace strata::events {

struct KvEventsOptions {
  // PUB endpoint; empty: no events. As vLLM: bound when it contains '*' or '::' or is ipc:// or
  // inproc:// (e.g. tcp://*:5557), connected otherwise (e.g. to a subscriber that binds).
  // Default: "" (off).
  std::string endpoint;
  // ROUTER endpoint for replay requests, always bound; empty: no replay. Default: "".
  std::string replay_endpoint;
  // Topic frame of every message. Default: "" (vLLM's default).
  std::string topic;
  // Batches kept for replay (vLLM's buffer_steps). Default: 10000.
  uint32_t replay_batches = 10000;
  // ZMQ send high-water mark of the PUB socket, in messages (vLLM's hwm). Default: 100000.
  uint32_t hwm = 100000;
  // Events waiting to be published at most (vLLM's max_queue_size); more are dropped and counted.
  // Default: 100000.
  uint32_t max_pending_events = 100000;
  // How often pending events are published as one batch. Default: 10 ms.
  uint32_t batch_interval_ms = 10;
  // The `medium` of each tier's events. Defaults: "CPU" (host) and "STORAGE" (disk), as vLLM's
  // offloading connector names its CPU and storage tiers; "GPU" (device), as vLLM's own.
  std::string medium_host = "CPU";
  std::string medium_disk = "STORAGE";
  std::string medium_device = "GPU";
  // Block hashes as 64-bit integers (vLLM's default) or as the 16 key bytes. Default: true.
  bool int_hashes = true;
  // The block_size field of BlockStored (Strata's daemon does not know a namespace's block size;
  // set the engines' one). Default: 16.
  uint32_t block_size = 16;
  // Event encoding (kv_event.h). Default: tagged maps (current vLLM).
  EventEncoding encoding = EventEncoding::kTaggedMap;
};

struct KvEventsStats {
  uint64_t next_seq = 0;        // sequence number of the next batch
  uint64_t batches = 0;         // batches published
  uint64_t blocks_stored = 0;   // block hashes in BlockStored events published
  uint64_t blocks_removed = 0;  // block hashes in BlockRemoved events published
  uint64_t clears = 0;          // AllBlocksCleared events published
  uint64_t dropped = 0;         // events dropped because max_pending_events were waiting
  uint64_t send_errors = 0;     // batches the PUB socket refused (kept for replay all the same)
  uint64_t replay_requests = 0;
  uint64_t replayed_batches = 0;
};

class KvEventPublisher {
 public:
  // Binds or connects the sockets. InvalidArgument for an empty endpoint, IOError (naming the
  // endpoint) when ZMQ refuses one.
  static Result<std::unique_ptr<KvEventPublisher>> Open(const KvEventsOptions& options);
  ~KvEventPublisher();
  KvEventPublisher(const KvEventPublisher&) = delete;
  KvEventPublisher& operator=(const KvEventPublisher&) = delete;

  // `tier` gained / lost the block `key`, whose store tag is `tag` (empty: none). Never blocks on
  // the network; the tag is decoded on the publisher thread.
  void RecordStored(Tier tier, const BlockKey& key, std::string_view tag = {});
  void RecordRemoved(Tier tier, const BlockKey& key, std::string_view tag = {});
  // Every block of every tier is gone (a full clear that left nothing behind).
  void RecordAllCleared();

  // Publishes everything recorded before the call and returns once it was sent.
  void Flush();

  KvEventsStats stats() const;
  const KvEventsOptions& options() const;

 private:
  class Impl;
  explicit KvEventPublisher(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The hash a block's key is published as (see the file comment).
ExternalBlockHash PublishedHash(const BlockKey& key, bool int_hashes);

}  // namespace strata::events
