#include "events/kv_event_publisher.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "events/block_tag.h"
#include "events/zmq_socket.h"

namespace strata::events {
namespace {

double NowSeconds() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

struct Pending {
  KvEventKind kind;
  Tier tier;
  BlockKey key;
  std::string tag;  // the block's store tag (block_tag.h); empty: none
};

// A pending change as it is published: the hash it names and, for an engine block, its tag.
struct Resolved {
  KvEventKind kind;
  Tier tier;
  ExternalBlockHash hash;
  std::optional<BlockTag> engine;
};

}  // namespace

ExternalBlockHash PublishedHash(const BlockKey& key, bool int_hashes) {
  if (int_hashes) return ExternalBlockHash(key.low);
  const auto b = key.ToBytes();
  return ExternalBlockHash(std::string(reinterpret_cast<const char*>(b.data()), b.size()));
}

class KvEventPublisher::Impl {
 public:
  explicit Impl(const KvEventsOptions& o) : options_(o) {}

  ~Impl() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  Status Start() {
    STRATA_ASSIGN_OR_RETURN(pub_, ZmqSocket::Open(ctx_, ZMQ_PUB));
    STRATA_RETURN_IF_ERROR(pub_.SetInt(ZMQ_SNDHWM, static_cast<int>(options_.hwm)));
    STRATA_RETURN_IF_ERROR(pub_.BindOrConnect(options_.endpoint).WithContext("kv_events"));
    if (!options_.replay_endpoint.empty()) {
      STRATA_ASSIGN_OR_RETURN(replay_, ZmqSocket::Open(ctx_, ZMQ_ROUTER));
      // As vLLM: room for a whole replay and its end marker (ZMQ acknowledges reads only every
      // HWM/2 messages).
      STRATA_RETURN_IF_ERROR(replay_.SetInt(
          ZMQ_SNDHWM, static_cast<int>(std::min<uint64_t>(2 * (uint64_t{options_.replay_batches} + 1),
                                                          INT32_MAX))));
      STRATA_RETURN_IF_ERROR(replay_.Bind(options_.replay_endpoint).WithContext("kv_events_replay"));
    }
    thread_ = std::thread([this] { Loop(); });
    return Status::OK();
  }

  void Record(KvEventKind kind, Tier tier, const BlockKey& key, std::string_view tag) {
    std::lock_guard lock(mu_);
    if (pending_.size() >= options_.max_pending_events) {
      ++stats_.dropped;
      return;
    }
    pending_.push_back({kind, tier, key, std::string(tag)});
  }

  void Flush() {
    std::unique_lock lock(mu_);
    const uint64_t want = ++flush_requested_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return flush_done_ >= want || stop_; });
  }

  KvEventsStats stats() const {
    std::lock_guard lock(mu_);
    return stats_;
  }

  const KvEventsOptions& options() const { return options_; }

 private:
  const std::string& Medium(Tier tier) const {
    return tier == Tier::kDisk     ? options_.medium_disk
           : tier == Tier::kDevice ? options_.medium_device
                                   : options_.medium_host;
  }

  void Loop() {
    std::vector<Pending> batch;
    for (;;) {
      // Replay requests are served between batches; without a replay socket, just wait.
      if (replay_.valid()) {
        if (replay_.Poll(static_cast<int>(options_.batch_interval_ms))) ServeReplay();
      }
      uint64_t flush_upto;
      bool stop;
      {
        std::unique_lock lock(mu_);
        if (!replay_.valid())
          cv_.wait_for(lock, std::chrono::milliseconds(options_.batch_interval_ms),
                       [&] { return stop_ || flush_requested_ > flush_done_; });
        batch.swap(pending_);
        flush_upto = flush_requested_;
        stop = stop_;
      }
      if (!batch.empty()) Publish(batch);
      batch.clear();
      {
        std::lock_guard lock(mu_);
        flush_done_ = flush_upto;
      }
      cv_.notify_all();
      if (stop) return;
    }
  }

  // The hash each change names: the engine's (from the block's tag) for an engine block, the
  // Strata key otherwise; secondary head shards are left out (their head-0 shard speaks for
  // the block). A tag that does not decode falls back to the key.
  std::vector<Resolved> Resolve(const std::vector<Pending>& batch) const {
    std::vector<Resolved> out;
    out.reserve(batch.size());
    for (const Pending& p : batch) {
      Resolved r{p.kind, p.tier, ExternalBlockHash(uint64_t{0}), std::nullopt};
      if (p.kind != KvEventKind::kAllBlocksCleared && !p.tag.empty()) {
        auto tag = DecodeBlockTag(p.tag);
        if (tag.ok() && tag->kind == BlockTagKind::kSecondaryShard) continue;
        if (tag.ok()) {
          r.hash = PublishedEngineHash(tag->hash, options_.int_hashes);
          r.engine = std::move(tag).value();
          out.push_back(std::move(r));
          continue;
        }
      }
      if (p.kind != KvEventKind::kAllBlocksCleared)
        r.hash = PublishedHash(p.key, options_.int_hashes);
      out.push_back(std::move(r));
    }
    return out;
  }

  // Whether `next` continues the BlockStored event that `prev` is in: same tier and, for engine
  // blocks, the chain continues (next's parent is prev's hash) with the same block size and LoRA
  // (vLLM's BlockStored names the parent of its first block only).
  static bool Continues(const Resolved& prev, const Resolved& next) {
    if (next.kind != prev.kind || next.tier != prev.tier) return false;
    if (prev.kind != KvEventKind::kBlockStored) return true;
    if (prev.engine.has_value() != next.engine.has_value()) return false;
    if (!prev.engine) return true;
    return next.engine->parent == prev.engine->hash &&
           next.engine->block_size == prev.engine->block_size &&
           next.engine->lora_name == prev.engine->lora_name &&
           next.engine->token_ids.empty() == prev.engine->token_ids.empty();
  }

  // One EventBatch from `batch`: runs of one kind and tier become one event (stored engine blocks:
  // runs of one chain, as vLLM's BlockStored).
  void Publish(const std::vector<Pending>& pending) {
    const std::vector<Resolved> batch = Resolve(pending);
    if (batch.empty()) return;
    KvEventBatch out;
    out.ts = NowSeconds();
    out.data_parallel_rank = 0;  // vLLM fills in its publisher's rank; one rank here
    uint64_t stored = 0, removed = 0, clears = 0;
    for (size_t i = 0; i < batch.size();) {
      const Resolved& p = batch[i];
      KvEvent e;
      e.kind = p.kind;
      if (p.kind == KvEventKind::kAllBlocksCleared) {
        ++clears;
        ++i;
        out.events.push_back(std::move(e));
        continue;
      }
      e.medium = Medium(p.tier);
      size_t j = i;
      for (; j < batch.size() && (j == i || Continues(batch[j - 1], batch[j])); ++j) {
        e.block_hashes.push_back(batch[j].hash);
        if (p.kind == KvEventKind::kBlockStored && batch[j].engine)
          for (uint32_t t : batch[j].engine->token_ids) e.token_ids.push_back(t);
      }
      if (p.kind == KvEventKind::kBlockStored) {
        e.block_size = options_.block_size;
        if (p.engine) {
          // As vLLM fills them (vllm/v1/core/block_pool.py, _build_block_stored_event).
          if (p.engine->parent.size != 0)
            e.parent_block_hash = PublishedEngineHash(p.engine->parent, options_.int_hashes);
          if (p.engine->block_size != 0) e.block_size = p.engine->block_size;
          if (!p.engine->lora_name.empty()) e.lora_name = p.engine->lora_name;
        }
        stored += j - i;
      } else {
        removed += j - i;
      }
      out.events.push_back(std::move(e));
      i = j;
    }
    std::string payload = EncodeEventBatch(out, options_.encoding);
    const uint64_t seq = next_seq_++;
    const Status st = pub_.SendFrames({options_.topic, SeqBytes(seq), payload}, /*dont_wait=*/true);
    ring_.emplace_back(seq, std::move(payload));
    while (ring_.size() > options_.replay_batches) ring_.pop_front();
    std::lock_guard lock(mu_);
    stats_.next_seq = next_seq_;
    ++stats_.batches;
    stats_.blocks_stored += stored;
    stats_.blocks_removed += removed;
    stats_.clears += clears;
    if (!st.ok()) ++stats_.send_errors;
  }

  void ServeReplay() {
    while (true) {
      auto frames = replay_.RecvFrames(/*dont_wait=*/true);
      if (!frames.ok()) return;  // nothing (more) waiting
      // (identity, "", start): anything else is ignored, as vLLM does.
      if (frames->size() != 3 || (*frames)[2].size() != 8) continue;
      const std::string& id = (*frames)[0];
      const uint64_t start = SeqFromBytes((*frames)[2]);
      uint64_t sent = 0;
      for (const auto& [seq, payload] : ring_) {
        if (seq < start) continue;
        (void)replay_.SendFrames({id, "", options_.topic, SeqBytes(seq), payload},
                                 /*dont_wait=*/true);
        ++sent;
      }
      (void)replay_.SendFrames({id, "", "", SeqBytes(kEndOfReplay), ""}, /*dont_wait=*/true);
      std::lock_guard lock(mu_);
      ++stats_.replay_requests;
      stats_.replayed_batches += sent;
    }
  }

  const KvEventsOptions options_;
  ZmqContext ctx_;
  // Sockets, sequence and ring: the publisher thread only (after Start).
  ZmqSocket pub_;
  ZmqSocket replay_;
  uint64_t next_seq_ = 0;
  std::deque<std::pair<uint64_t, std::string>> ring_;
  std::thread thread_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Pending> pending_;  // GUARDED_BY(mu_)
  uint64_t flush_requested_ = 0;  // GUARDED_BY(mu_)
  uint64_t flush_done_ = 0;  // GUARDED_BY(mu_)
  bool stop_ = false;  // GUARDED_BY(mu_)
  KvEventsStats stats_;  // GUARDED_BY(mu_)
};

KvEventPublisher::KvEventPublisher(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
KvEventPublisher::~KvEventPublisher() = default;

Result<std::unique_ptr<KvEventPublisher>> KvEventPublisher::Open(const KvEventsOptions& options) {
  if (options.endpoint.empty()) return Status::InvalidArgument("kv_events: empty endpoint");
  if (options.replay_batches == 0)
    return Status::InvalidArgument("kv_events_replay_batches: must be at least 1");
  if (options.batch_interval_ms == 0)
    return Status::InvalidArgument("kv_events_batch_ms: must be at least 1");
  auto impl = std::make_unique<Impl>(options);
  STRATA_RETURN_IF_ERROR(impl->Start());
  return std::unique_ptr<KvEventPublisher>(new KvEventPublisher(std::move(impl)));
}

void KvEventPublisher::RecordStored(Tier tier, const BlockKey& key, std::string_view tag) {
  impl_->Record(KvEventKind::kBlockStored, tier, key, tag);
}
void KvEventPublisher::RecordRemoved(Tier tier, const BlockKey& key, std::string_view tag) {
  impl_->Record(KvEventKind::kBlockRemoved, tier, key, tag);
}
void KvEventPublisher::RecordAllCleared() {
  impl_->Record(KvEventKind::kAllBlocksCleared, Tier::kNone, BlockKey{}, {});
}
void KvEventPublisher::Flush() { impl_->Flush(); }
KvEventsStats KvEventPublisher::stats() const { return impl_->stats(); }
const KvEventsOptions& KvEventPublisher::options() const { return impl_->options(); }

}  // namespace strata::events
