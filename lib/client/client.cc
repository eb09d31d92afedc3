// Client: the engine API (strata/client.h) over a Channel. Copies of KV bytes per call:
//   Store: 1 (engine buffer -> shared pool; its XXH3-64 computed chunk by chunk from cache).
//   Load:  1 (shared pool -> engine buffer; verified chunk by chunk from cache).
#include "strata/client.h"

#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <thread>

#include "client/channel.h"
#include "strata/block_format.h"
#include "strata/key_chain.h"

namespace strata {
namespace {

// A small pool of threads for asynchronous calls.
class WorkerPool {
 public:
  explicit WorkerPool(int n) {
    for (int i = 0; i < std::max(1, n); ++i) threads_.emplace_back([this] { Run(); });
  }
  ~WorkerPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  void Submit(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      tasks_.push_back(std::move(task));
    }
    cv_.notify_one();
  }

 private:
  void Run() {
    while (true) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !tasks_.empty(); });
        if (tasks_.empty()) return;
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;  // GUARDED_BY(mu_)
  bool stop_ = false;                        // GUARDED_BY(mu_)
  std::vector<std::thread> threads_;
};

BlockTier ToBlockTier(ipc::Tier t) { return static_cast<BlockTier>(static_cast<uint8_t>(t)); }

template <typename T>
Result<T> Expect(Result<ipc::ResponseBody> r) {
  if (!r.ok()) return r.status();
  if (auto* v = std::get_if<T>(&*r)) return std::move(*v);
  return Status::Internal("daemon answered with the wrong reply type");
}

class ClientImpl final : public Client {
 public:
  ClientImpl(std::unique_ptr<Channel> channel, const ClientOptions& options)
      : channel_(std::move(channel)), workers_(options.worker_threads) {}

  Result<LookupResult> Lookup(std::span<const BlockKey> keys) override {
    STRATA_ASSIGN_OR_RETURN(
        ipc::LookupReply reply,
        Expect<ipc::LookupReply>(channel_->Call(ipc::LookupRequest{{keys.begin(), keys.end()}})));
    LookupResult out;
    out.matched_blocks = reply.matched;
    for (ipc::Tier t : reply.tiers) out.tiers.push_back(ToBlockTier(t));
    return out;
  }

  Result<LookupResult> Lookup(const Namespace& ns, std::span<const uint32_t> tokens) override {
    std::vector<BlockKey> keys = ComputeBlockKeys(ns, tokens);
    STRATA_ASSIGN_OR_RETURN(LookupResult out, Lookup(keys));
    out.matched_tokens = out.matched_blocks * ns.block_size();
    out.keys = std::move(keys);
    return out;
  }

  Completion<uint32_t> Prefetch(std::span<const BlockKey> keys) override {
    std::vector<BlockKey> k(keys.begin(), keys.end());
    return Async<uint32_t>([this, k = std::move(k)]() mutable -> Result<uint32_t> {
      STRATA_ASSIGN_OR_RETURN(ipc::PrefetchReply reply, Expect<ipc::PrefetchReply>(channel_->Call(
                                                            ipc::PrefetchRequest{std::move(k)})));
      return reply.queued;
    });
  }

  Completion<size_t> Store(const Namespace& ns, std::span<const BlockKey> keys,
                           std::span<const ConstBuffer> buffers) override {
    std::vector<BlockKey> k(keys.begin(), keys.end());
    std::vector<ConstBuffer> b(buffers.begin(), buffers.end());
    NamespaceId id = ns.id();
    Codec codec = ns.spec().codec;
    return Async<size_t>([this, id, codec, k = std::move(k), b = std::move(b)] {
      return DoStore(id, codec, k, b);
    });
  }

  Completion<size_t> Load(std::span<const BlockKey> keys,
                          std::span<const MutableBuffer> buffers) override {
    std::vector<BlockKey> k(keys.begin(), keys.end());
    std::vector<MutableBuffer> b(buffers.begin(), buffers.end());
    return Async<size_t>([this, k = std::move(k), b = std::move(b)] { return DoLoad(k, b); });
  }

  Result<size_t> Pin(std::span<const BlockKey> keys, uint32_t pin_ms) override {
    STRATA_ASSIGN_OR_RETURN(ipc::LoadReply reply,
                            Expect<ipc::LoadReply>(channel_->Call(
                                ipc::LoadRequest{{keys.begin(), keys.end()}, pin_ms})));
    return reply.locations.size();
  }

  Status Unpin(std::span<const BlockKey> keys) override {
    return Expect<ipc::UnpinReply>(channel_->Call(ipc::UnpinRequest{{keys.begin(), keys.end()}}))
        .status();
  }

  Result<std::string> Stats() override {
    STRATA_ASSIGN_OR_RETURN(ipc::StatsReply reply,
                            Expect<ipc::StatsReply>(channel_->Call(ipc::StatsRequest{})));
    return reply.json;
  }

  Result<uint64_t> Clear(std::optional<NamespaceId> ns) override {
    STRATA_ASSIGN_OR_RETURN(ipc::ClearReply reply,
                            Expect<ipc::ClearReply>(channel_->Call(ipc::ClearRequest{ns})));
    return reply.erased;
  }

 private:
  template <typename T, typename Fn>
  Completion<T> Async(Fn fn) {
    auto promise = std::make_shared<std::promise<Result<T>>>();
    Completion<T> completion(promise->get_future());
    workers_.Submit([promise, fn = std::move(fn)]() mutable { promise->set_value(fn()); });
    return completion;
  }

  Status CheckRange(uint64_t offset, uint64_t length) const {
    if (offset > channel_->pool_bytes() || length > channel_->pool_bytes() - offset)
      return Status::Internal("daemon returned a location outside its pool");
    return Status::OK();
  }

  Result<size_t> DoStore(const NamespaceId& ns, Codec codec, const std::vector<BlockKey>& keys,
                         const std::vector<ConstBuffer>& buffers) {
    if (keys.size() != buffers.size())
      return Status::InvalidArgument("Store: " + std::to_string(keys.size()) + " keys but " +
                                     std::to_string(buffers.size()) + " buffers");
    if (keys.empty()) return size_t{0};
    ipc::StoreBeginRequest begin{ns, keys, {}, codec};
    for (const auto& b : buffers) {
      if (b.data == nullptr && b.size > 0) return Status::InvalidArgument("Store: null buffer");
      begin.sizes.push_back(b.size);
    }
    STRATA_ASSIGN_OR_RETURN(ipc::StoreBeginReply reply,
                            Expect<ipc::StoreBeginReply>(channel_->Call(std::move(begin))));
    if (reply.slots.size() != keys.size())
      return Status::Internal("daemon reserved a different number of slots");
    ipc::StoreCommitRequest commit;
    for (size_t i = 0; i < keys.size(); ++i) {
      const ipc::Slot& slot = reply.slots[i];
      if (slot.exists) continue;
      Status range = CheckRange(slot.offset, buffers[i].size);
      if (!range.ok()) {
        AbortReserved(reply, keys, i);
        return range;
      }
      commit.keys.push_back(keys[i]);
      commit.checksums.push_back(CopyWithChecksum(channel_->pool_base() + slot.offset,
                                                 static_cast<const std::byte*>(buffers[i].data),
                                                 buffers[i].size));
    }
    if (commit.keys.empty()) return size_t{0};
    STRATA_ASSIGN_OR_RETURN(ipc::StoreCommitReply done,
                            Expect<ipc::StoreCommitReply>(channel_->Call(std::move(commit))));
    return size_t{done.committed};
  }

  void AbortReserved(const ipc::StoreBeginReply& reply, const std::vector<BlockKey>& keys,
                     size_t from) {
    ipc::StoreCommitRequest abort;
    abort.abort = true;
    for (size_t i = from; i < keys.size(); ++i)
      if (!reply.slots[i].exists) abort.keys.push_back(keys[i]);
    (void)channel_->Call(std::move(abort));
  }

  Result<size_t> DoLoad(const std::vector<BlockKey>& keys,
                        const std::vector<MutableBuffer>& buffers) {
    if (keys.size() != buffers.size())
      return Status::InvalidArgument("Load: " + std::to_string(keys.size()) + " keys but " +
                                     std::to_string(buffers.size()) + " buffers");
    if (keys.empty()) return size_t{0};
    STRATA_ASSIGN_OR_RETURN(ipc::LoadReply reply,
                            Expect<ipc::LoadReply>(channel_->Call(ipc::LoadRequest{keys, 0})));
    const size_t pinned = reply.locations.size();
    Status error;
    size_t loaded = 0;
    for (; loaded < pinned; ++loaded) {
      const ipc::Location& loc = reply.locations[loaded];
      if (buffers[loaded].size < loc.length) {
        error = Status::InvalidArgument("Load: buffer " + std::to_string(loaded) + " holds " +
                                        std::to_string(buffers[loaded].size) + " bytes, block " +
                                        keys[loaded].ToHex() + " has " +
                                        std::to_string(loc.length));
        break;
      }
      if (Status range = CheckRange(loc.offset, loc.length); !range.ok()) {
        error = range;
        break;
      }
      uint64_t sum = CopyWithChecksum(static_cast<std::byte*>(buffers[loaded].data),
                                     channel_->pool_base() + loc.offset, loc.length);
      if (sum != loc.checksum) break;  // a corrupt block is a miss: the prefix ends here
    }
    Status unpin = Unpin(std::span<const BlockKey>(keys).first(pinned));
    if (!error.ok()) return error;
    if (!unpin.ok()) return unpin;
    return loaded;
  }

  std::unique_ptr<Channel> channel_;
  WorkerPool workers_;
};

}  // namespace

std::string_view BlockTierName(BlockTier tier) {
  return ipc::TierName(static_cast<ipc::Tier>(static_cast<uint8_t>(tier)));
}

Result<std::unique_ptr<Client>> Client::Connect(const std::string& socket_path,
                                                const ClientOptions& options) {
  const std::string path = socket_path.empty() ? ipc::DefaultSocketPath() : socket_path;
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<SocketChannel> ch,
                          SocketChannel::Open(path, options.request_timeout_ms));
  return std::unique_ptr<Client>(new ClientImpl(std::move(ch), options));
}

Result<std::unique_ptr<Client>> Client::Embedded(const EmbeddedOptions& options,
                                                 const ClientOptions& client_options) {
  NodeOptions node;
  node.host_pool_bytes = options.host_pool_bytes;
  node.data_dir = options.data_dir;
  node.disk_bytes = options.disk_bytes;
  node.eviction_policy = options.eviction_policy;
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<EmbeddedChannel> ch, EmbeddedChannel::Open(node));
  return std::unique_ptr<Client>(new ClientImpl(std::move(ch), client_options));
}

}  // namespace strata
