#include "events/engine_events.h"

#include <atomic>
#include <chrono>
#include <iostream>
#include <mutex>
#include <thread>
#include <unordered_set>

#include "events/zmq_socket.h"

namespace strata::events {
namespace {

using Clock = std::chrono::steady_clock;
using HashSet = std::unordered_set<ExternalBlockHash>;

constexpr std::string_view kDefaultMedium = "GPU";  // vLLM's medium for its own GPU cache

struct Engine {
  EngineView view;                       // GUARDED_BY(Impl::mu_)
  std::map<std::string, HashSet> held;   // GUARDED_BY(Impl::mu_); medium -> hashes
  // Subscriber thread only.
  ZmqSocket sub;
  ZmqSocket replay;
};

}  // namespace

class EngineEvents::Impl {
 public:
  explicit Impl(const EngineEventsOptions& o) : options_(o) {}
  ~Impl() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }

  Status Start() {
    for (size_t i = 0; i < options_.engines.size(); ++i) {
      const EngineEndpoint& ep = options_.engines[i];
      auto e = std::make_unique<Engine>();
      e->view.name = ep.name.empty() ? "engine" + std::to_string(i) : ep.name;
      e->view.endpoint = ep.endpoint;
      e->view.replay_endpoint = ep.replay_endpoint;
      const std::string ctx = "engine_events '" + e->view.name + "'";
      STRATA_ASSIGN_OR_RETURN(e->sub, ZmqSocket::Open(ctx_, ZMQ_SUB));
      STRATA_RETURN_IF_ERROR(e->sub.SetBytes(ZMQ_SUBSCRIBE, ep.topic));
      STRATA_RETURN_IF_ERROR(e->sub.BindOrConnect(ep.endpoint).WithContext(ctx));
      if (!ep.replay_endpoint.empty()) {
        STRATA_ASSIGN_OR_RETURN(e->replay, ZmqSocket::Open(ctx_, ZMQ_DEALER));
        STRATA_RETURN_IF_ERROR(e->replay.Connect(ep.replay_endpoint).WithContext(ctx));
      }
      engines_.push_back(std::move(e));
    }
    thread_ = std::thread([this] { Loop(); });
    return Status::OK();
  }

  std::vector<EngineView> Snapshot() const {
    std::lock_guard lock(mu_);
    std::vector<EngineView> out;
    for (const auto& e : engines_) {
      EngineView v = e->view;
      for (const auto& [medium, set] : e->held) v.held_blocks[medium] = set.size();
      out.push_back(std::move(v));
    }
    return out;
  }

  size_t HeldPrefix(std::string_view engine, std::span<const ExternalBlockHash> chain,
                    std::string_view medium) const {
    std::lock_guard lock(mu_);
    for (const auto& e : engines_) {
      if (e->view.name != engine) continue;
      auto it = e->held.find(std::string(medium));
      if (it == e->held.end()) return 0;
      size_t n = 0;
      while (n < chain.size() && it->second.count(chain[n])) ++n;
      return n;
    }
    return 0;
  }

 private:
  void Loop() {
    std::vector<zmq_pollitem_t> items(engines_.size());
    while (!stop_.load()) {
      for (size_t i = 0; i < engines_.size(); ++i)
        items[i] = {engines_[i]->sub.get(), 0, ZMQ_POLLIN, 0};
      if (zmq_poll(items.data(), static_cast<int>(items.size()), 100) <= 0) continue;
      for (size_t i = 0; i < engines_.size(); ++i) {
        if (!(items[i].revents & ZMQ_POLLIN)) continue;
        Engine& e = *engines_[i];
        for (int n = 0; n < 1024; ++n) {  // drain, bounded so other engines get their turn
          auto frames = e.sub.RecvFrames(/*dont_wait=*/true);
          if (!frames.ok()) break;
          if (frames->size() != 3 || (*frames)[1].size() != 8) {
            Count(e, &EngineView::decode_errors);
            continue;
          }
          OnLive(e, SeqFromBytes((*frames)[1]), (*frames)[2]);
        }
      }
    }
  }

  void Count(Engine& e, uint64_t EngineView::*field) {
    std::lock_guard lock(mu_);
    ++(e.view.*field);
  }

  std::optional<uint64_t> LastSeq(Engine& e) {
    std::lock_guard lock(mu_);
    return e.view.last_seq;
  }

  void OnLive(Engine& e, uint64_t seq, const std::string& payload) {
    const std::optional<uint64_t> last = LastSeq(e);
    if (!last) {
      // First batch: learn the history the engine still keeps.
      if (seq > 0) {
        if (!e.replay.valid() || !Replay(e, 0, seq)) MarkStale(e, /*gap=*/false);
      }
    } else if (seq == 0) {
      // Live batches arrive in order and a replay only ever runs ahead of them, so a live 0 after
      // any batch is a new publisher.
      Restart(e);
    } else if (seq <= *last) {
      return;  // applied already (through a replay that ran ahead of the live stream)
    } else if (seq > *last + 1) {
      Count(e, &EngineView::gaps);
      if (!e.replay.valid() || !Replay(e, *last + 1, seq)) MarkStale(e, /*gap=*/true);
    }
    if (LastSeq(e) && seq <= *LastSeq(e)) return;  // the replay delivered it already
    Apply(e, seq, payload);
  }

  void Restart(Engine& e) {
    std::lock_guard lock(mu_);
    ++e.view.restarts;
    e.held.clear();
    e.view.last_seq.reset();
    e.view.stale = false;
  }

  void MarkStale(Engine& e, bool gap) {
    std::lock_guard lock(mu_);
    e.view.stale = true;
    if (gap) ++e.view.unrecovered_gaps;
  }

  // Asks for every kept batch from `from` on and applies those in order; true when the batches
  // [from, until) all arrived.
  bool Replay(Engine& e, uint64_t from, uint64_t until) {
    Count(e, &EngineView::replay_requests);
    if (!e.replay.SendFrames({"", SeqBytes(from)}, /*dont_wait=*/true).ok()) return false;
    const auto deadline = Clock::now() + std::chrono::milliseconds(options_.replay_timeout_ms);
    bool complete = true;
    std::optional<uint64_t> next = from;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - Clock::now()).count();
      if (left <= 0 || !e.replay.Poll(static_cast<int>(left))) return false;  // timed out
      auto frames = e.replay.RecvFrames(/*dont_wait=*/true);
      if (!frames.ok()) continue;
      // After the delimiter: (topic, seq, payload) from vLLM 0.33, (seq, payload) from older.
      if (frames->size() < 3 || frames->size() > 4 || !(*frames)[0].empty()) continue;
      const std::string& seq_bytes = (*frames)[frames->size() - 2];
      if (seq_bytes.size() != 8) continue;
      const uint64_t seq = SeqFromBytes(seq_bytes);
      if (seq == kEndOfReplay) break;
      const std::optional<uint64_t> last = LastSeq(e);
      if (last && seq <= *last) continue;
      if (next && seq != *next && seq < until) complete = false;  // the engine dropped some
      next = seq + 1;
      Apply(e, seq, frames->back());
      {
        std::lock_guard lock(mu_);
        ++e.view.replayed_batches;
      }
    }
    const std::optional<uint64_t> last = LastSeq(e);
    return complete && (until == 0 || (last && *last + 1 >= until));
  }

  void Apply(Engine& e, uint64_t seq, const std::string& payload) {
    auto batch = DecodeEventBatch(
        std::span(reinterpret_cast<const std::byte*>(payload.data()), payload.size()));
    std::lock_guard lock(mu_);
    e.view.last_seq = seq;
    if (!batch.ok()) {
      ++e.view.decode_errors;
      e.view.stale = true;
      return;
    }
    ++e.view.batches;
    for (const KvEvent& ev : batch->events) {
      ++e.view.events;
      const std::string medium(ev.medium ? *ev.medium : std::string(kDefaultMedium));
      switch (ev.kind) {
        case KvEventKind::kBlockStored: {
          HashSet& set = e.held[medium];
          for (const auto& h : ev.block_hashes) set.insert(h);
          e.view.blocks_stored += ev.block_hashes.size();
          break;
        }
        case KvEventKind::kBlockRemoved: {
          auto it = e.held.find(medium);
          if (it != e.held.end())
            for (const auto& h : ev.block_hashes) it->second.erase(h);
          e.view.blocks_removed += ev.block_hashes.size();
          break;
        }
        case KvEventKind::kAllBlocksCleared:
          e.held.clear();
          ++e.view.clears;
          e.view.stale = false;  // the engine's cache is known again: empty
          break;
      }
    }
  }

  const EngineEventsOptions options_;
  ZmqContext ctx_;
  std::vector<std::unique_ptr<Engine>> engines_;  // fixed after Start
  mutable std::mutex mu_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

EngineEvents::EngineEvents(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
EngineEvents::~EngineEvents() = default;

Result<std::unique_ptr<EngineEvents>> EngineEvents::Open(const EngineEventsOptions& options) {
  if (options.engines.empty()) return Status::InvalidArgument("engine_events: no engine");
  for (const EngineEndpoint& ep : options.engines)
    if (ep.endpoint.empty()) return Status::InvalidArgument("engine_events: empty endpoint");
  auto impl = std::make_unique<Impl>(options);
  STRATA_RETURN_IF_ERROR(impl->Start());
  return std::unique_ptr<EngineEvents>(new EngineEvents(std::move(impl)));
}

std::vector<EngineView> EngineEvents::Snapshot() const { return impl_->Snapshot(); }

bool EngineEvents::Holds(std::string_view engine, const ExternalBlockHash& hash,
                         std::string_view medium) const {
  return impl_->HeldPrefix(engine, std::span(&hash, 1), medium) == 1;
}

size_t EngineEvents::HeldPrefix(std::string_view engine, std::span<const ExternalBlockHash> chain,
                                std::string_view medium) const {
  return impl_->HeldPrefix(engine, chain, medium);
}

Result<std::vector<EngineEndpoint>> ParseEngineEndpoints(const std::string& value) {
  std::vector<EngineEndpoint> out;
  size_t start = 0;
  while (start <= value.size()) {
    size_t comma = value.find(',', start);
    if (comma == std::string::npos) comma = value.size();
    std::string entry = value.substr(start, comma - start);
    start = comma + 1;
    if (entry.empty()) continue;
    EngineEndpoint ep;
    const size_t eq = entry.find('=');
    const size_t scheme = entry.find("://");
    if (eq != std::string::npos && (scheme == std::string::npos || eq < scheme)) {
      ep.name = entry.substr(0, eq);
      entry = entry.substr(eq + 1);
    }
    const size_t bar = entry.find('|');
    ep.endpoint = entry.substr(0, bar);
    if (bar != std::string::npos) ep.replay_endpoint = entry.substr(bar + 1);
    auto valid = [](const std::string& e) { return e.find("://") != std::string::npos; };
    if (!valid(ep.endpoint) || (bar != std::string::npos && !valid(ep.replay_endpoint)))
      return Status::InvalidArgument("engine_events: '" + entry +
                                     "' (expected [NAME=]ENDPOINT[|REPLAY_ENDPOINT], e.g. "
                                     "vllm0=tcp://10.0.0.5:5557|tcp://10.0.0.5:5558)");
    out.push_back(std::move(ep));
  }
  if (out.empty()) return Status::InvalidArgument("engine_events: no engine in '" + value + "'");
  return out;
}

}  // namespace strata::events
