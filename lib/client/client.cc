// Client: the engine API (strata/client.h) over a Channel. Copies of KV bytes per call
// (docs/data-plane.md):
//   Store:      engine buffer -> staging (codec none: memcpy; else the codec's encoder writes it);
//               the daemon then copies staging -> pool, hashing as it copies.
//   Load:       pool (read-only mapping) -> engine buffer (codec none: StreamCopy, or with
//               verify_loads hashed as it is copied), or decoded straight into the buffer
//               (verified in place first with verify_loads).
//   StorePaged: engine pages -> staging, gathered per head shard (codec none), or gathered into
//               scratch and encoded into staging; then the daemon's copy.
//   LoadPaged:  pool -> engine pages, each shard scattered in one pass (codec none; with
//               verify_loads hashed on the way, ScatterWithChecksum, a shard that fails ending
//               the prefix), or decoded into scratch and scattered.
#include "strata/client.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include "client/channel.h"
#include "client/copy_threads.h"
#include "client/cuda_paged.h"
#include "client/enum_setting.h"
#include "client/huge_page_collapser.h"
#include "client/huge_pages.h"
#include "client/kv_share.h"
#include "client/staging_allocator.h"
#include "core/checksum_copy.h"
#include "strata/block_format.h"
#include "strata/key_chain.h"
#include "strata_kernels/block_codec.h"
#include "strata_kernels/gather_scatter.h"

namespace strata {
namespace {

static_assert(static_cast<int>(KvLayout::kVllmFlashAttn) ==
              static_cast<int>(kernels::PagedLayout::kVllmFlashAttn));
static_assert(static_cast<int>(KvLayout::kFlashInfer) ==
              static_cast<int>(kernels::PagedLayout::kFlashInfer));
static_assert(static_cast<int>(KvLayout::kMla) == static_cast<int>(kernels::PagedLayout::kMla));

// The client's enum settings (client/enum_setting.h): a ClientOptions field or a default, which
// a STRATA_* variable overrides (docs/config.md).
constexpr EnumName<ClientOptions::StorePath> kStorePathNames[] = {
    {"auto", ClientOptions::StorePath::kAuto},
    {"staging", ClientOptions::StorePath::kStaging},
    {"cross_memory", ClientOptions::StorePath::kCrossMemory}};
constexpr EnumSetting<ClientOptions::StorePath> kStorePath{
    "STRATA_STORE_PATH", "ClientOptions::store_path", kStorePathNames};
constexpr EnumName<ClientOptions::KvHugePages> kKvHugePagesNames[] = {
    {"off", ClientOptions::KvHugePages::kOff},
    {"advise", ClientOptions::KvHugePages::kAdvise},
    {"collapse", ClientOptions::KvHugePages::kCollapse}};
constexpr EnumSetting<ClientOptions::KvHugePages> kKvHugePages{
    "STRATA_KV_HUGE_PAGES", "ClientOptions::kv_huge_pages", kKvHugePagesNames};
constexpr EnumName<ClientOptions::KvShare> kKvShareNames[] = {
    {"off", ClientOptions::KvShare::kOff}, {"memfd", ClientOptions::KvShare::kMemfd}};
constexpr EnumSetting<ClientOptions::KvShare> kKvShare{"STRATA_KV_SHARE",
                                                       "ClientOptions::kv_share", kKvShareNames};
constexpr EnumName<ClientOptions::MapPool> kMapPoolNames[] = {
    {"auto", ClientOptions::MapPool::kAuto},
    {"connect", ClientOptions::MapPool::kConnect},
    {"first_load", ClientOptions::MapPool::kFirstLoad},
    {"background", ClientOptions::MapPool::kBackground}};
constexpr EnumSetting<ClientOptions::MapPool> kMapPool{"STRATA_MAP_POOL",
                                                       "ClientOptions::map_pool", kMapPoolNames};
// Loads through the load index: on unless turned off in the client's environment (the escape
// hatch, and the A/B switch of the benchmarks); no ClientOptions field.
constexpr EnumName<bool> kLoadIndexNames[] = {{"on", true}, {"off", false}, {"1", true}, {"0", false}};
constexpr EnumSetting<bool> kLoadIndex{"STRATA_LOAD_INDEX", "", kLoadIndexNames};
// An embedded client's verify_loads (a daemon's clients take the daemon's, from its Hello reply):
// the names `strata serve` takes for STRATA_VERIFY_LOADS.
constexpr EnumName<bool> kVerifyLoadsNames[] = {{"true", true}, {"false", false}, {"1", true},
                                                {"0", false},   {"yes", true},    {"no", false},
                                                {"on", true},   {"off", false}};
constexpr EnumSetting<bool> kVerifyLoads{"STRATA_VERIFY_LOADS", "EmbeddedOptions::verify_loads",
                                         kVerifyLoadsNames};

// The settings a client runs with, read once when it connects: an error in any of them fails
// Connect (and Embedded), naming its source.
struct ClientSettings {
  ClientOptions::StorePath store_path = ClientOptions::StorePath::kAuto;
  ClientOptions::KvHugePages kv_huge_pages = ClientOptions::KvHugePages::kAdvise;
  ClientOptions::KvShare kv_share = ClientOptions::KvShare::kOff;
  ClientOptions::MapPool map_pool = ClientOptions::MapPool::kAuto;
  bool load_index = true;
};

Result<ClientSettings> SettingsOf(const ClientOptions& options) {
  ClientSettings s;
  STRATA_ASSIGN_OR_RETURN(s.store_path, ResolveEnumSetting(kStorePath, options.store_path));
  STRATA_ASSIGN_OR_RETURN(s.kv_huge_pages,
                          ResolveEnumSetting(kKvHugePages, options.kv_huge_pages));
  STRATA_ASSIGN_OR_RETURN(s.kv_share, ResolveEnumSetting(kKvShare, options.kv_share));
  STRATA_ASSIGN_OR_RETURN(s.map_pool, ResolveEnumSetting(kMapPool, options.map_pool));
  STRATA_ASSIGN_OR_RETURN(s.load_index, ResolveEnumSetting(kLoadIndex, true));
  return s;
}

// A call that runs once, on whichever thread claims it first (its caller's Completion::Wait or
// a worker): Run() after the first is a no-op.
class ClaimedOnce {
 public:
  virtual ~ClaimedOnce() = default;
  virtual void Run() = 0;
  virtual bool claimed() const = 0;
};

// A small pool of threads for asynchronous calls.
//
// Submit queues a call for the workers and wakes one. Defer is for a call its caller most likely
// runs itself (Completion::Wait of a call waited for at once: the Python and C APIs, an engine's
// synchronous load): it is queued for nobody and wakes nobody, so such a call costs no thread
// hand-off, no wake-up and no timer (docs/benchmarks.md, "The embedded 2 MiB get at 4 clients").
// The pool only keeps a weak reference to it, so that a call still unclaimed when the pool stops
// runs then; a worker takes one up earlier only when the function Starter returns for it is
// called (Completion::Ready, or its Completion dropped unwaited: Completion in strata/client.h).
//
// Thread-safety: every method may be called from any thread. Starter's function may outlive the
// pool (a Completion kept after its client was closed): it runs the call in the calling thread
// then, a no-op since the stopping pool ran it.
class WorkerPool {
 public:
  explicit WorkerPool(int n) : queue_(std::make_shared<Queue>()) {
    for (int i = 0; i < std::max(1, n); ++i)
      threads_.emplace_back([q = queue_.get()] { q->Run(); });
  }
  ~WorkerPool() {
    {
      std::lock_guard<std::mutex> lock(queue_->mu);
      queue_->stop = true;
    }
    queue_->cv.notify_all();
    for (auto& t : threads_) t.join();
  }
  void Submit(std::function<void()> task) { queue_->Submit(std::move(task)); }
  void Defer(const std::shared_ptr<ClaimedOnce>& call) {
    std::lock_guard<std::mutex> lock(queue_->mu);
    queue_->Prune();
    queue_->deferred.push_back(call);
  }
  // A function that hands `call` to a worker (the Completion's start_elsewhere).
  std::function<void()> Starter(std::shared_ptr<ClaimedOnce> call) const {
    return [q = queue_, call = std::move(call)] { q->Submit([call] { call->Run(); }); };
  }
  size_t size() const { return threads_.size(); }

 private:
  struct Queue {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::function<void()>> tasks;             // GUARDED_BY(mu)
    std::vector<std::weak_ptr<ClaimedOnce>> deferred;    // GUARDED_BY(mu)
    size_t prune_at = kPruneMin;                         // GUARDED_BY(mu)
    bool stop = false;                                   // GUARDED_BY(mu)
    static constexpr size_t kPruneMin = 64;

    void Submit(std::function<void()> task) {
      {
        std::unique_lock<std::mutex> lock(mu);
        if (stop) {  // no worker is left to run it (a Completion kept after its client closed)
          lock.unlock();
          task();
          return;
        }
        tasks.push_back(std::move(task));
      }
      cv.notify_one();
    }
    // Drops the records of deferred calls claimed or gone, once they are twice as many as after
    // the last pruning: amortised O(1) per Defer. REQUIRES: mu held.
    void Prune() {
      if (deferred.size() < prune_at) return;
      std::erase_if(deferred, [](const std::weak_ptr<ClaimedOnce>& w) {
        auto c = w.lock();
        return c == nullptr || c->claimed();
      });
      prune_at = std::max(kPruneMin, 2 * deferred.size());
    }
    void Run() {
      std::unique_lock<std::mutex> lock(mu);
      while (true) {
        if (stop) {  // every deferred call nobody claimed runs now
          for (auto& w : deferred)
            if (auto c = w.lock()) tasks.push_back([c] { c->Run(); });
          deferred.clear();
        }
        if (!tasks.empty()) {
          std::function<void()> task = std::move(tasks.front());
          tasks.pop_front();
          lock.unlock();
          task();
          lock.lock();
          continue;
        }
        if (stop) return;
        cv.wait(lock);
      }
    }
  };
  std::shared_ptr<Queue> queue_;
  std::vector<std::thread> threads_;
};

template <typename T>
Result<T> Expect(Result<ipc::ResponseBody> r) {
  if (!r.ok()) return r.status();
  if (auto* v = std::get_if<T>(&*r)) return std::move(*v);
  return Status::Internal("daemon answered with the wrong reply type");
}

Status FromKernel(const kernels::KernelStatus& st, const std::string& context) {
  if (st.ok()) return Status::OK();
  const std::string msg = context + ": " + st.message();
  switch (st.code()) {
    case kernels::KernelCode::kInvalidArgument: return Status::InvalidArgument(msg);
    case kernels::KernelCode::kCorruption: return Status::Corruption(msg);
    case kernels::KernelCode::kNotSupported: return Status::NotSupported(msg);
    case kernels::KernelCode::kOutOfRange: return Status::InvalidArgument(msg);
    default: return Status::Internal(msg);
  }
}

// The uncompressed shape of one block of `ns`, with `heads` KV heads (a head shard: 1).
kernels::BlockShape ShapeOf(const NamespaceSpec& spec, uint32_t heads) {
  kernels::BlockShape s;
  s.num_layers = spec.num_layers;
  s.planes = spec.attention == AttentionKind::kMla ? 1 : 2;
  s.block_size = spec.block_size;
  s.num_kv_heads = heads;
  s.head_dim = spec.head_dim;
  s.dtype = static_cast<kernels::KvDtype>(spec.kv_dtype);
  return s;
}

// This thread's codec for (codec, shape): BlockCodec keeps compression contexts and scratch, one
// object per thread.
Result<kernels::BlockCodec*> ThreadCodec(Codec codec, const kernels::BlockShape& shape) {
  using Key = std::tuple<uint16_t, uint32_t, uint32_t, uint32_t, uint32_t, uint32_t, uint8_t>;
  thread_local std::map<Key, std::unique_ptr<kernels::BlockCodec>> codecs;
  const Key key{static_cast<uint16_t>(codec), shape.num_layers, shape.planes, shape.block_size,
                shape.num_kv_heads, shape.head_dim, static_cast<uint8_t>(shape.dtype)};
  auto it = codecs.find(key);
  if (it != codecs.end()) return it->second.get();
  std::unique_ptr<kernels::BlockCodec> c;
  Status st = FromKernel(kernels::BlockCodec::Create(static_cast<kernels::Codec>(codec), shape,
                                                     kernels::CodecOptions{}, &c),
                         "codec " + std::string(CodecName(codec)));
  if (!st.ok()) return st;
  if (codecs.size() > 16) codecs.clear();  // a thread serving many shapes: keep the map small
  auto* raw = c.get();
  codecs.emplace(key, std::move(c));
  return raw;
}

// How loads take blocks out of the pool (Channel::verify_loads; docs/data-plane.md, "Verified at
// commit, copied at load"): with `verify`, every byte is hashed (XXH3-64, fused into the copy
// where the bytes are copied) and compared with the daemon's checksum, a mismatch being a miss;
// without, the bytes are copied plainly (StreamCopy: non-temporal stores, as the fused pass; the
// daemon verified the block before publishing it).

// True when `verify` is off or the payload hashes to `checksum` (a check in place, for bytes
// another pass reads next: a device copy, a layerwise scatter).
bool ChecksumOk(const std::byte* payload, uint64_t length, uint64_t checksum, bool verify) {
  return !verify || PayloadChecksum({payload, length}) == checksum;
}

// Copies a shard out of the pool into rows of `row_bytes` (the last may be shorter): one pass,
// hashed on the way with `verify`. False when the hash is not `checksum`.
bool ScatterShard(const std::byte* src, uint64_t n, size_t row_bytes, std::byte* const* rows,
                  uint64_t checksum, bool verify) {
  if (verify) return ScatterWithChecksum(src, n, row_bytes, rows) == checksum;
  StreamScatter(src, n, row_bytes, rows);
  return true;
}

// A block's bytes copied (codec none) or decoded (a codec: its framing is checked as it is
// decoded) into `out` (raw bytes of the shape), hashed against the daemon's checksum with
// `verify`. False when it fails verification or decoding (a miss, never data).
bool CopyOutBlock(Codec codec, const kernels::BlockShape& shape, const std::byte* payload,
                  uint64_t length, uint64_t checksum, bool verify, std::byte* out) {
  if (codec == Codec::kNone) {
    if (length != shape.bytes()) return false;
    if (!verify) {
      StreamCopy(out, payload, length);
      return true;
    }
    return CopyWithChecksum(out, payload, length) == checksum;
  }
  if (!ChecksumOk(payload, length, checksum, verify)) return false;
  auto c = ThreadCodec(codec, shape);
  if (!c.ok()) return false;
  return (*c)->Decode({payload, length}, {out, shape.bytes()}).ok();
}

// One payload to publish: where its key goes in the chain, and how to write it.
struct StagedItem {
  BlockKey key;
  BlockKey parent;  // BlockKey{}: none
  uint64_t max_bytes = 0;
  // Writes the payload into dst (max_bytes long); returns its length.
  std::function<Result<uint64_t>(std::byte* dst)> write;
  // What the engine publishes for the block (StoreOptions::engine_blocks); every item of a call
  // has one or none does.
  std::optional<ipc::CommitEngineBlock> engine = std::nullopt;
};

// The commit form of `b`, a block of `ns`.
ipc::CommitEngineBlock EngineInfo(const Namespace& ns, const EngineBlock& b) {
  return {false, b, ns.block_size(), ns.spec().lora_id};
}

// Engine blocks for the shards of a paged store (block-major, `heads` per block, the first of
// this rank being head `head_begin`): head 0's shard carries the block's, the others are
// secondary. Empty when `blocks` is.
std::vector<std::optional<ipc::CommitEngineBlock>> ShardEngineInfo(
    const Namespace& ns, std::span<const EngineBlock> blocks, uint32_t heads,
    uint32_t head_begin) {
  std::vector<std::optional<ipc::CommitEngineBlock>> out;
  if (blocks.empty()) return out;
  out.reserve(blocks.size() * heads);
  for (const EngineBlock& b : blocks)
    for (uint32_t h = 0; h < heads; ++h) {
      if (head_begin + h == 0) {
        out.push_back(EngineInfo(ns, b));
      } else {
        ipc::CommitEngineBlock secondary;
        secondary.secondary_shard = true;
        out.push_back(std::move(secondary));
      }
    }
  return out;
}

Status CheckEngineBlocks(const char* what, size_t keys, const StoreOptions& options) {
  if (options.engine_blocks.empty() || options.engine_blocks.size() == keys) return Status::OK();
  return Status::InvalidArgument(std::string(what) + ": " + std::to_string(keys) + " keys but " +
                                 std::to_string(options.engine_blocks.size()) +
                                 " engine blocks");
}

// Commits in flight: the daemon copies round k out of staging while the caller writes round k+1
// into another lease. At most one commit is outstanding; a lease is released only after the
// daemon answered for it (it reads the staging bytes until then), also when the caller returns
// early with an error. One sender thread per pipeline carries the commits (not one per commit:
// rounds are small, so that a round's staging is still in cache when the daemon copies it).
class CommitPipeline {
 public:
  explicit CommitPipeline(Channel* channel) : channel_(channel) {}
  ~CommitPipeline() {
    (void)Drain();
    if (sender_.joinable()) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        stop_ = true;
      }
      cv_.notify_all();
      sender_.join();
    }
  }

  // Sends `commit` (whose payloads lie in `lease`) once the previous one is answered.
  Status Submit(ipc::StoreCommitRequest commit, StagingLease lease) {
    STRATA_RETURN_IF_ERROR(Drain());
    lease_ = std::move(lease);
    if (!sender_.joinable()) sender_ = std::thread([this] { Send(); });
    {
      std::lock_guard<std::mutex> lock(mu_);
      pending_ = std::move(commit);
      busy_ = true;
    }
    cv_.notify_all();
    return Status::OK();
  }
  // Waits for the outstanding commit; the first error of any commit.
  Status Drain() {
    std::optional<Result<ipc::ResponseBody>> r;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return !busy_; });
      r.swap(reply_);
    }
    if (r.has_value()) {
      lease_.Reset();
      if (!r->ok()) {
        if (error_.ok()) error_ = r->status();
      } else if (auto* reply = std::get_if<ipc::StoreCommitReply>(&**r)) {
        committed_ += reply->committed;
      } else if (error_.ok()) {
        error_ = Status::Internal("daemon answered a commit with the wrong reply type");
      }
    }
    return error_;
  }
  size_t committed() const { return committed_; }

 private:
  void Send() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stop_ || pending_.has_value(); });
      if (!pending_.has_value()) return;
      ipc::StoreCommitRequest commit = std::move(*pending_);
      pending_.reset();
      lock.unlock();
      Result<ipc::ResponseBody> r = channel_->Call(std::move(commit));
      lock.lock();
      reply_.emplace(std::move(r));
      busy_ = false;
      cv_.notify_all();
    }
  }

  Channel* channel_;
  StagingLease lease_;
  Status error_;
  size_t committed_ = 0;
  std::thread sender_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<ipc::StoreCommitRequest> pending_;  // GUARDED_BY(mu_)
  std::optional<Result<ipc::ResponseBody>> reply_;  // GUARDED_BY(mu_)
  bool busy_ = false;                               // GUARDED_BY(mu_)
  bool stop_ = false;                               // GUARDED_BY(mu_)
};

// Bytes of one commit round: large enough that a round trip is cheap beside the copy, small
// enough that the client's writing and the daemon's copying overlap, and that the two rounds in
// flight (8 MiB) stay in the shared L3 cache between the client's write and the daemon's read
// (16 MiB rounds went through DRAM: docs/benchmarks.md, "engine").
constexpr uint64_t kRoundBytes = uint64_t{4} << 20;
// Bytes of one cross-memory commit: the client writes nothing, so rounds only bound how long one
// request holds the daemon's copy threads and how much pool it reserves at once.
constexpr uint64_t kCrossMemoryRoundBytes = uint64_t{64} << 20;
// The least bytes a copy thread is given: splitting costs a wake-up of each copy thread (tens of
// microseconds), which a copy of 1 MiB (~0.1-0.3 ms) repays.
constexpr uint64_t kParallelCopyMin = uint64_t{1} << 20;

struct RegisteredCache {
  Namespace ns;
  KvCacheSpec spec;
  kernels::PagedKvSpec paged;  // with this rank's heads
  uint32_t head_begin = 0;     // first of this rank's heads in the namespace
  kernels::BlockShape shard;   // one head shard, uncompressed
  std::vector<std::span<const std::byte>> const_layers;
  std::vector<std::span<std::byte>> layers;
  // Pages in CUDA device memory (spec.device >= 0): the device half of the data path; `layers`
  // then hold device addresses the CPU never touches.
  std::shared_ptr<DeviceKvCache> device;
  // What the kernel took of the huge-page advice for host pages (ClientOptions::kv_huge_pages).
  HugePageAdvice huge_pages;
  // The background MADV_COLLAPSE of those pages (kCollapse; null otherwise).
  std::shared_ptr<const CollapseJob> collapse;
  // The share of the cache with the daemon (ClientOptions::kv_share; client/kv_share.h): its id
  // at the daemon (0: not shared), and whether every layer lies in the moved pages (else the
  // unaligned edges are only readable cross-memory).
  uint64_t share_id = 0;
  bool shared_whole = false;

  // Whether MADV_COLLAPSE has put at least three quarters of the pages in huge pages so far (an
  // unaligned layer loses up to 2 MiB at each end; the kernel does not split huge pages again
  // unless memory runs short). Read at each paged store: the path follows the collapse.
  bool InHugePages() const {
    const uint64_t total = CacheBytes();
    return total > 0 && collapse != nullptr && collapse->collapsed_bytes() * 4 >= total * 3;
  }
  uint64_t CacheBytes() const { return uint64_t{paged.num_layers} * paged.layer_bytes(); }

  uint32_t heads() const { return paged.num_kv_heads; }
  // A shard's [layer][plane][token][head_dim] payload in rows: one row per (layer, plane, token),
  // or per (layer, plane) where the engine's tile is the shard's rows already (one head, MLA).
  uint64_t RowBytes() const {
    const uint64_t row = uint64_t{paged.head_dim} * kernels::KvDtypeBytes(paged.dtype);
    return heads() == 1 ? row * paged.block_size : row;
  }
  size_t RowsPerShard() const { return shard.bytes() / RowBytes(); }
  // Where each row of head `h`'s shard of engine page `page` lives in the engine's pages.
  // REQUIRES: rows has RowsPerShard() entries; page < paged.num_blocks; h < heads().
  void ShardRows(int32_t page, uint32_t h, std::byte** rows) const {
    const kernels::BlockShape shape = paged.block_shape();
    const uint64_t chunk = shape.chunk_bytes(), row = RowBytes();
    const uint32_t tokens = heads() == 1 ? 1 : paged.block_size;
    size_t r = 0;
    for (uint32_t l = 0; l < paged.num_layers; ++l)
      for (uint32_t p = 0; p < shape.planes; ++p) {
        std::byte* tile =
            layers[l].data() +
            kernels::EngineChunkIndex(paged.layout, paged.num_blocks, uint64_t(page), p) * chunk;
        for (uint32_t t = 0; t < tokens; ++t)
          rows[r++] = tile + (uint64_t{t} * heads() + h) * row;
      }
  }
  // Shard keys of `keys`, block-major: keys[i]'s shards at [i * heads(), (i + 1) * heads()).
  std::vector<BlockKey> ShardKeys(std::span<const BlockKey> keys) const {
    std::vector<BlockKey> out;
    out.reserve(keys.size() * heads());
    for (const BlockKey& k : keys)
      for (uint32_t h = 0; h < heads(); ++h) out.push_back(HeadShardKey(k, head_begin + h));
    return out;
  }
};

class ClientImpl final : public Client {
 public:
  ClientImpl(std::unique_ptr<Channel> channel, const ClientOptions& options,
             const ClientSettings& settings)
      : channel_(std::move(channel)),
        staging_(channel_->staging_bytes()),
        forced_cross_memory_(settings.store_path == ClientOptions::StorePath::kCrossMemory),
        store_path_(settings.store_path),
        kv_huge_pages_(settings.kv_huge_pages),
        kv_share_(settings.kv_share),
        copy_threads_(options.copy_threads < 0 ? CopyThreads::DefaultHelpers()
                                               : options.copy_threads),
        workers_(options.worker_threads),
        use_index_(settings.load_index),
        verify_loads_(channel_->verify_loads()) {}
  ~ClientImpl() override { StopNotices(); }

  Result<LookupResult> Lookup(std::span<const BlockKey> keys) override {
    return LookupIn(keys, std::nullopt);
  }

  Result<LookupResult> LookupIn(std::span<const BlockKey> keys, std::optional<NamespaceId> ns) {
    STRATA_ASSIGN_OR_RETURN(ipc::LookupReply reply,
                            Expect<ipc::LookupReply>(channel_->Call(
                                ipc::LookupRequest{{keys.begin(), keys.end()}, ns})));
    LookupResult out;
    out.matched_blocks = reply.matched;
    out.tiers = std::move(reply.tiers);
    return out;
  }

  Result<LookupResult> Lookup(const Namespace& ns, std::span<const uint32_t> tokens) override {
    STRATA_RETURN_IF_ERROR(EnsureOpen(ns));
    std::vector<BlockKey> keys = ComputeBlockKeys(ns, tokens);
    STRATA_ASSIGN_OR_RETURN(LookupResult out, LookupIn(keys, ns.id()));
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
    }, /*in_caller=*/true);
  }

  using Client::Store;
  using Client::StorePaged;
  using Client::StorePagedLayerwise;

  Completion<size_t> Store(const Namespace& ns, std::span<const BlockKey> keys,
                           std::span<const ConstBuffer> buffers,
                           const StoreOptions& options) override {
    std::vector<BlockKey> k(keys.begin(), keys.end());
    std::vector<ConstBuffer> b(buffers.begin(), buffers.end());
    std::vector<EngineBlock> e(options.engine_blocks.begin(), options.engine_blocks.end());
    const bool one_round = OneRound(ns, k.size());
    return Async<size_t>(
        [this, ns, k = std::move(k), b = std::move(b), e = std::move(e)] {
          return DoStore(ns, k, b, e);
        },
        /*in_caller=*/one_round);
  }

  Completion<size_t> Load(const Namespace& ns, std::span<const BlockKey> keys,
                          std::span<const MutableBuffer> buffers) override {
    std::vector<BlockKey> k(keys.begin(), keys.end());
    std::vector<MutableBuffer> b(buffers.begin(), buffers.end());
    return Async<size_t>(
        [this, ns, k = std::move(k), b = std::move(b)] { return DoLoad(ns, k, b); },
        /*in_caller=*/true);  // holds no staging
  }

  Result<KvCacheId> RegisterKvCache(const Namespace& ns, const KvCacheSpec& spec) override {
    const NamespaceSpec& n = ns.spec();
    const bool mla = n.attention == AttentionKind::kMla;
    if ((spec.layout == KvLayout::kMla) != mla)
      return Status::InvalidArgument(std::string("RegisterKvCache: layout ") +
                                     std::string(KvLayoutName(spec.layout)) +
                                     " does not match the namespace's attention kind");
    if (spec.layers.size() != n.num_layers)
      return Status::InvalidArgument("RegisterKvCache: " + std::to_string(spec.layers.size()) +
                                     " layer pointers for a namespace of " +
                                     std::to_string(n.num_layers) + " layers");
    if (spec.num_blocks == 0) return Status::InvalidArgument("RegisterKvCache: num_blocks is 0");
    if (spec.tp_size == 0 || spec.tp_rank >= spec.tp_size)
      return Status::InvalidArgument("RegisterKvCache: tp_rank " + std::to_string(spec.tp_rank) +
                                     " is not below tp_size " + std::to_string(spec.tp_size));
    if (!mla && n.num_kv_heads % spec.tp_size != 0)
      return Status::InvalidArgument("RegisterKvCache: tp_size " + std::to_string(spec.tp_size) +
                                     " does not divide the namespace's " +
                                     std::to_string(n.num_kv_heads) + " KV heads");
    STRATA_RETURN_IF_ERROR(EnsureOpen(ns));
    RegisteredCache c{ns, spec, {}, 0, ShapeOf(n, 1), {}, {}, nullptr, {}, nullptr, 0, false};
    c.paged.layout = static_cast<kernels::PagedLayout>(spec.layout);
    c.paged.dtype = static_cast<kernels::KvDtype>(n.kv_dtype);
    c.paged.num_layers = n.num_layers;
    c.paged.num_blocks = spec.num_blocks;
    c.paged.block_size = n.block_size;
    c.paged.num_kv_heads = mla ? 1 : n.num_kv_heads / spec.tp_size;
    c.paged.head_dim = n.head_dim;
    c.head_begin = mla ? 0 : spec.tp_rank * c.paged.num_kv_heads;
    STRATA_RETURN_IF_ERROR(
        FromKernel(kernels::ValidatePagedKvSpec(c.paged), "RegisterKvCache"));
    const uint64_t layer_bytes = c.paged.layer_bytes();
    for (void* p : spec.layers) {
      if (p == nullptr) return Status::InvalidArgument("RegisterKvCache: a layer pointer is null");
      c.layers.emplace_back(static_cast<std::byte*>(p), layer_bytes);
      c.const_layers.emplace_back(static_cast<const std::byte*>(p), layer_bytes);
    }
    if (n.codec != Codec::kNone) STRATA_RETURN_IF_ERROR(ThreadCodec(n.codec, c.shard).status());
    if (spec.device < 0 && kv_share_ == ClientOptions::KvShare::kMemfd &&
        store_path_ != ClientOptions::StorePath::kStaging && n.codec == Codec::kNone)
      ShareWithDaemon(&c);
    if (spec.device < 0 && c.share_id == 0 &&
        kv_huge_pages_ != ClientOptions::KvHugePages::kOff) {
      std::vector<MemoryRange> ranges;
      for (const auto& l : c.layers) ranges.push_back({l.data(), l.size()});
      c.huge_pages = AdviseHugePages(ranges);
      // The collapse runs on the collapser's thread: registration returns at once.
      if (kv_huge_pages_ == ClientOptions::KvHugePages::kCollapse && !c.huge_pages.advised.empty())
        c.collapse = collapser_.Start(c.huge_pages.advised);
    }
    if (spec.device >= 0) {
      STRATA_ASSIGN_OR_RETURN(DeviceMemory * memory, Devices());
      STRATA_ASSIGN_OR_RETURN(c.device, DeviceKvCache::Create(memory, spec.device, c.paged,
                                                              spec.layers, n.codec));
    }
    std::lock_guard<std::mutex> lock(caches_mu_);
    const KvCacheId id = next_cache_++;
    caches_[id] = std::make_shared<const RegisteredCache>(std::move(c));
    return id;
  }

  // Moves the host cache `c` onto a memfd and hands it to the daemon (ClientOptions::kv_share,
  // client/kv_share.h). Best effort, as the huge-page advice: a cache that cannot be moved (not
  // plain private memory) or a daemon that refuses the share leaves the cache on today's paths.
  void ShareWithDaemon(RegisteredCache* c) {
    std::vector<MemoryRange> ranges;
    for (const auto& l : c->layers) ranges.push_back({l.data(), l.size()});
    auto moved = MoveOntoMemfd(ranges);
    if (!moved.ok()) return;
    ipc::ShareKvRequest share;
    share.bytes = moved->bytes();
    for (size_t i = 0; i < moved->ranges().size(); ++i) {
      share.client_addresses.push_back(reinterpret_cast<uint64_t>(moved->ranges()[i].begin));
      share.lengths.push_back(moved->ranges()[i].bytes);
      share.offsets.push_back(moved->offsets()[i]);
    }
    auto id = channel_->ShareKv(moved->fd(), std::move(share));
    if (!id.ok()) return;
    c->share_id = *id;
    c->shared_whole = true;
    for (const auto& l : c->layers)
      c->shared_whole = c->shared_whole && moved->Covers(l.data(), l.size());
  }

  Status UnregisterKvCache(KvCacheId cache) override {
    std::shared_ptr<const RegisteredCache> c;
    {
      std::lock_guard<std::mutex> lock(caches_mu_);
      auto it = caches_.find(cache);
      if (it == caches_.end())
        return Status::NotFound("KV cache " + std::to_string(cache) + " is not registered");
      c = std::move(it->second);
      caches_.erase(it);
    }
    // The engine may free the memory once this returns: no MADV_COLLAPSE of it may run after.
    collapser_.Cancel(c->collapse);
    // The daemon unmaps its view of the cache; the engine's pages stay where they are (on the
    // memfd, which its mapping now alone holds) until it frees them.
    if (c->share_id != 0)
      STRATA_RETURN_IF_ERROR(
          channel_->Call(ipc::UnshareKvRequest{c->share_id}).status().WithContext(
              "UnregisterKvCache"));
    return Status::OK();
  }

  Result<KvCacheHugePages> HugePagesOf(KvCacheId cache) override {
    STRATA_ASSIGN_OR_RETURN(auto c, Cache(cache));
    KvCacheHugePages h;
    if (c->device) return h;
    h.cache_bytes = c->CacheBytes();
    h.advised_bytes = c->huge_pages.advised_bytes;
    if (c->collapse != nullptr) {
      h.collapsed_bytes = c->collapse->collapsed_bytes();
      h.collapsing = !c->collapse->finished();
    }
    h.in_huge_pages = c->InHugePages();
    return h;
  }

  Result<size_t> LookupPaged(KvCacheId cache, std::span<const BlockKey> keys) override {
    STRATA_ASSIGN_OR_RETURN(auto c, Cache(cache));
    std::vector<BlockKey> shards = c->ShardKeys(keys);
    STRATA_ASSIGN_OR_RETURN(LookupResult r, LookupIn(shards, c->ns.id()));
    return r.matched_blocks / c->heads();
  }

  Completion<size_t> StorePaged(KvCacheId cache, std::span<const BlockKey> keys,
                                std::span<const int32_t> block_ids,
                                const StoreOptions& options) override {
    std::vector<BlockKey> k(keys.begin(), keys.end());
    std::vector<int32_t> ids(block_ids.begin(), block_ids.end());
    std::vector<EngineBlock> e(options.engine_blocks.begin(), options.engine_blocks.end());
    return Async<size_t>([this, cache, k = std::move(k), ids = std::move(ids),
                          e = std::move(e)]() -> Result<size_t> {
      STRATA_ASSIGN_OR_RETURN(auto c, Cache(cache));
      return DoStorePaged(*c, k, ids, e);
    });
  }

  Completion<size_t> LoadPaged(KvCacheId cache, std::span<const BlockKey> keys,
                               std::span<const int32_t> block_ids) override {
    std::vector<BlockKey> k(keys.begin(), keys.end());
    std::vector<int32_t> ids(block_ids.begin(), block_ids.end());
    auto registered = Cache(cache);
    const bool host_pages = registered.ok() && !(*registered)->device;  // holds no staging
    return Async<size_t>(
        [this, cache, k = std::move(k), ids = std::move(ids)]() -> Result<size_t> {
          STRATA_ASSIGN_OR_RETURN(auto c, Cache(cache));
          return DoLoadPaged(*c, k, ids, nullptr);
        },
        /*in_caller=*/host_pages);
  }

  Result<std::unique_ptr<LayerwiseStore>> StorePagedLayerwise(
      KvCacheId cache, std::span<const BlockKey> keys, std::span<const int32_t> block_ids,
      const StoreOptions& options) override;
  Result<std::unique_ptr<LayerwiseLoad>> LoadPagedLayerwise(
      KvCacheId cache, std::span<const BlockKey> keys, std::span<const int32_t> block_ids) override;

  Result<size_t> Pin(const Namespace& ns, std::span<const BlockKey> keys,
                     uint32_t pin_ms) override {
    STRATA_RETURN_IF_ERROR(EnsureOpen(ns));
    STRATA_ASSIGN_OR_RETURN(ipc::LoadReply reply,
                            Expect<ipc::LoadReply>(channel_->Call(
                                ipc::LoadRequest{ns.id(), {keys.begin(), keys.end()}, pin_ms,
                                                 RecomputeRate(ns.id())})));
    return reply.locations.size();
  }

  Status SetRecomputeRate(const Namespace& ns, double tokens_per_second) override {
    if (!(tokens_per_second > 0) || !std::isfinite(tokens_per_second))
      return Status::InvalidArgument("SetRecomputeRate: tokens_per_second must be positive and "
                                     "finite");
    std::lock_guard<std::mutex> lock(rates_mu_);
    rates_[ns.id()] = tokens_per_second;
    return Status::OK();
  }

  // The rate reported for `ns`; 0 when none.
  double RecomputeRate(const NamespaceId& ns) const {
    std::lock_guard<std::mutex> lock(rates_mu_);
    auto it = rates_.find(ns);
    return it == rates_.end() ? 0 : it->second;
  }

  Status Unpin(std::span<const BlockKey> keys) override {
    return Expect<ipc::UnpinReply>(channel_->Call(ipc::UnpinRequest{{keys.begin(), keys.end()}}))
        .status();
  }

  // Releases a load's pins once its bytes are copied out, without waiting for the daemon's answer
  // (Channel::Post): the daemon handles the connection's requests in order, so every later request
  // sees them released; pins an Unpin failed to release still expire (pin_ms). Nothing pinned:
  // nothing sent.
  Status ReleasePins(std::span<const BlockKey> keys) {
    if (keys.empty()) return Status::OK();
    return channel_->Post(ipc::UnpinRequest{{keys.begin(), keys.end()}});
  }

  Result<std::string> Stats() override {
    FlushNotices();  // the daemon counts this client's loads through the index first
    STRATA_ASSIGN_OR_RETURN(ipc::StatsReply reply,
                            Expect<ipc::StatsReply>(channel_->Call(ipc::StatsRequest{})));
    return reply.json;
  }

  Result<uint64_t> Clear(std::optional<NamespaceId> ns) override {
    STRATA_ASSIGN_OR_RETURN(ipc::ClearReply reply,
                            Expect<ipc::ClearReply>(channel_->Call(ipc::ClearRequest{ns})));
    return reply.erased;
  }

  // --- shared by the plain, paged and layerwise paths ---

  Result<std::shared_ptr<const RegisteredCache>> Cache(KvCacheId id) {
    std::lock_guard<std::mutex> lock(caches_mu_);
    auto it = caches_.find(id);
    if (it == caches_.end())
      return Status::NotFound("KV cache " + std::to_string(id) + " is not registered");
    return it->second;
  }

  // Runs `fn` on a worker thread. `in_caller`: `fn` is left to its caller instead: the caller's
  // Completion::Wait() runs it in the waiting thread, so a call waited for at once (the C and
  // Python APIs, an engine's synchronous load) costs no hand-off to a worker and back and wakes no
  // thread; Completion::Ready(), or the Completion dropped unwaited, hands it to a worker
  // (WorkerPool::Defer).
  // REQUIRES for in_caller: `fn` holds at most one staging lease at a time and waits for staging
  // only while it holds none (RoundLimit() bounds the pipelines of the workers, not of callers).
  template <typename T, typename Fn>
  Completion<T> Async(Fn fn, bool in_caller = false) {
    struct Task final : ClaimedOnce {
      explicit Task(Fn f) : fn(std::move(f)) {}
      void Run() override {
        if (!claimed_.exchange(true, std::memory_order_acq_rel)) promise.set_value(fn());
      }
      bool claimed() const override { return claimed_.load(std::memory_order_acquire); }
      std::atomic<bool> claimed_{false};
      std::promise<Result<T>> promise;
      Fn fn;
    };
    auto task = std::make_shared<Task>(std::move(fn));
    std::future<Result<T>> future = task->promise.get_future();
    if (!in_caller) {
      workers_.Submit([task] { task->Run(); });
      return Completion<T>(std::move(future));
    }
    workers_.Defer(task);
    return Completion<T>(std::move(future), [task] { task->Run(); }, workers_.Starter(task));
  }

  // Which keys are cached; `bytes_each` (an upper bound of each payload) lets the daemon refuse a
  // store the pool cannot hold before anything is encoded.
  Result<std::vector<uint8_t>> Exists(const NamespaceId& ns, std::vector<BlockKey> keys,
                                      uint64_t bytes_each = 0) {
    const size_t n = keys.size();
    std::vector<uint64_t> sizes(bytes_each ? n : 0, bytes_each);
    STRATA_ASSIGN_OR_RETURN(ipc::StoreBeginReply reply,
                            Expect<ipc::StoreBeginReply>(channel_->Call(ipc::StoreBeginRequest{
                                ns, std::move(keys), std::move(sizes)})));
    if (reply.exists.size() != n)
      return Status::Internal("daemon answered " + std::to_string(reply.exists.size()) +
                              " existence flags for " + std::to_string(n) + " keys");
    return std::move(reply.exists);
  }

  // Writes `items` into staging, in rounds, and has the daemon publish them, the daemon's copy of
  // one round overlapping the writing of the next. Returns how many were newly published.
  Result<size_t> StageAndCommit(const Namespace& ns, Codec codec,
                                std::vector<StagedItem>& items) {
    const uint64_t round_limit = RoundLimit();
    CommitPipeline pipeline(channel_.get());
    for (size_t first = 0; first < items.size();) {
      size_t last = first;
      uint64_t bytes = 0;
      while (last < items.size() &&
             (last == first || bytes + items[last].max_bytes + 64 <= round_limit)) {
        bytes += Aligned(items[last].max_bytes);
        ++last;
      }
      // An oversized round holds staging alone: never two such leases per call (no deadlock).
      if (bytes > round_limit) STRATA_RETURN_IF_ERROR(pipeline.Drain());
      STRATA_ASSIGN_OR_RETURN(uint64_t base, staging_.Acquire(bytes));
      StagingLease lease(&staging_, base, bytes);
      ipc::StoreCommitRequest commit{ns.id(), codec, {}, {}, {}, {}};
      commit.spec = DescribeOnce(ns);
      uint64_t at = base;
      for (size_t i = first; i < last; ++i) {
        STRATA_ASSIGN_OR_RETURN(uint64_t written, items[i].write(channel_->staging_base() + at));
        AddToCommit(&commit, items[i].key, items[i].parent, at, written);
        if (items[i].engine) commit.engine_blocks.push_back(*items[i].engine);
        at += Aligned(items[i].max_bytes);
      }
      if (commit.engine_blocks.size() != commit.keys.size()) commit.engine_blocks.clear();
      if (first == 0 && last == items.size()) {
        // The call's only round: nothing to overlap, so no sender thread; this thread commits.
        STRATA_ASSIGN_OR_RETURN(ipc::StoreCommitReply reply,
                                Expect<ipc::StoreCommitReply>(channel_->Call(std::move(commit))));
        return size_t{reply.committed};
      }
      STRATA_RETURN_IF_ERROR(pipeline.Submit(std::move(commit), std::move(lease)));
      first = last;
    }
    STRATA_RETURN_IF_ERROR(pipeline.Drain());
    return pipeline.committed();
  }

  // A payload the daemon reads out of this process's memory (codec none).
  struct CrossMemoryItem {
    BlockKey key;
    BlockKey parent;
    const void* data;
    uint64_t bytes;
    std::optional<ipc::CommitEngineBlock> engine;
  };
  // Has the daemon copy `items` straight out of this process's memory into the pool, in commits
  // of at most kCrossMemoryRoundBytes (docs/data-plane.md, "Cross-memory store"): no staging, no
  // StoreBegin (the daemon skips the blocks it holds before reading them). Returns how many were
  // newly published. REQUIRES: channel_->cross_memory(); the buffers stay valid until it returns.
  Result<size_t> CommitCrossMemory(const Namespace& ns, std::span<const CrossMemoryItem> items) {
    size_t committed = 0;
    for (size_t first = 0; first < items.size();) {
      ipc::StoreCommitRequest commit{ns.id(), Codec::kNone, {}, {}, {}, {}};
      commit.spec = DescribeOnce(ns);
      uint64_t bytes = 0;
      size_t last = first;
      for (; last < items.size() && (last == first || bytes + items[last].bytes <=
                                                          kCrossMemoryRoundBytes);
           ++last) {
        const CrossMemoryItem& it = items[last];
        commit.keys.push_back(it.key);
        commit.parents.push_back(it.parent);
        commit.source_addresses.push_back(reinterpret_cast<uint64_t>(it.data));
        commit.lengths.push_back(it.bytes);
        if (it.engine) commit.engine_blocks.push_back(*it.engine);
        bytes += it.bytes;
      }
      if (commit.engine_blocks.size() != commit.keys.size()) commit.engine_blocks.clear();
      STRATA_ASSIGN_OR_RETURN(ipc::StoreCommitReply reply,
                              Expect<ipc::StoreCommitReply>(channel_->Call(std::move(commit))));
      committed += reply.committed;
      first = last;
    }
    return committed;
  }

  // The spec of `ns` the first time this connection commits to it (the daemon records it for
  // `strata inspect`, docs/client-protocol.md), nullopt afterwards.
  std::optional<NamespaceSpec> DescribeOnce(const Namespace& ns) {
    std::lock_guard<std::mutex> lock(described_mu_);
    if (!described_.insert(ns.id()).second) return std::nullopt;
    return ns.spec();
  }

  static uint64_t Aligned(uint64_t n) { return (n + 63) & ~uint64_t{63}; }
  static void AddToCommit(ipc::StoreCommitRequest* commit, const BlockKey& key,
                          const BlockKey& parent, uint64_t offset, uint64_t length) {
    commit->keys.push_back(key);
    commit->parents.push_back(parent);
    commit->staging_offsets.push_back(offset);
    commit->lengths.push_back(length);
  }
  // The most staging one round of one call may take: two rounds of every worker fit at once.
  uint64_t RoundLimit() const {
    return std::max<uint64_t>(
        std::min<uint64_t>(kRoundBytes, staging_.bytes() / (2 * (workers_.size() + 1))), 64);
  }

  // A Store of `n` blocks of `ns` that goes in one round trip: codec none (writing a block the
  // daemon holds already costs a memcpy, not an encode) and every block fits one round. It skips
  // StoreBegin: all blocks are written into staging and committed; the daemon still copies and
  // checksums each, and skips (counts as existed) those it holds.
  bool OneRound(const Namespace& ns, size_t n) const {
    return ns.spec().codec == Codec::kNone && n > 0 &&
           n <= RoundLimit() / Aligned(ns.block_bytes() + 64);
  }

  Result<size_t> DoStore(const Namespace& ns, const std::vector<BlockKey>& keys,
                         const std::vector<ConstBuffer>& buffers,
                         const std::vector<EngineBlock>& engine) {
    STRATA_RETURN_IF_ERROR(EnsureOpen(ns));
    STRATA_RETURN_IF_ERROR(CheckEngineBlocks("Store", keys.size(), StoreOptions{engine}));
    if (keys.size() != buffers.size())
      return Status::InvalidArgument("Store: " + std::to_string(keys.size()) + " keys but " +
                                     std::to_string(buffers.size()) + " buffers");
    if (keys.empty()) return size_t{0};
    const uint64_t block_bytes = ns.block_bytes();
    for (size_t i = 0; i < buffers.size(); ++i) {
      if (buffers[i].data == nullptr) return Status::InvalidArgument("Store: null buffer");
      if (buffers[i].size != block_bytes)
        return Status::InvalidArgument("Store: buffer " + std::to_string(i) + " holds " +
                                       std::to_string(buffers[i].size) +
                                       " bytes, a block of this namespace has " +
                                       std::to_string(block_bytes));
    }
    const Codec codec = ns.spec().codec;
    const kernels::BlockShape shape = ShapeOf(ns.spec(), ns.spec().num_kv_heads);
    uint64_t max_bytes = block_bytes;
    if (codec != Codec::kNone) {
      STRATA_ASSIGN_OR_RETURN(kernels::BlockCodec * c, ThreadCodec(codec, shape));
      max_bytes = c->max_encoded_bytes();
    }
    // `auto` sends a store that fits one staging round through staging: the client's memcpy into
    // staging (which stays in cache) plus the daemon's fused copy out of it cost less than the
    // kernel pinning the engine's 4 KiB pages one by one for process_vm_readv (one 2 MiB block
    // per call: p50 261-331 us against 463-615 us; docs/benchmarks.md, "Where a peer wins").
    // Larger stores are read in place, split over the daemon's copy threads.
    const bool in_place = forced_cross_memory_ || !OneRound(ns, keys.size());
    if (codec == Codec::kNone && channel_->cross_memory() && in_place) {
      // More than one commit: StoreBegin first, so that a request the empty pool cannot hold is
      // refused whole (NoSpace) before any round evicts for it, and cached blocks are skipped.
      std::vector<uint8_t> cached(keys.size(), 0);
      if (uint64_t{keys.size()} * block_bytes > kCrossMemoryRoundBytes) {
        STRATA_ASSIGN_OR_RETURN(cached, Exists(ns.id(), keys, block_bytes));
      }
      std::vector<CrossMemoryItem> items;
      items.reserve(keys.size());
      for (size_t i = 0; i < keys.size(); ++i)
        if (!cached[i])
          items.push_back({keys[i], i > 0 ? keys[i - 1] : BlockKey{}, buffers[i].data,
                         block_bytes,
                         engine.empty() ? std::nullopt
                                        : std::optional(EngineInfo(ns, engine[i]))});
      return CommitCrossMemory(ns, items);
    }
    std::vector<uint8_t> exists(keys.size(), 0);  // one round: the commit skips cached blocks
    if (!OneRound(ns, keys.size())) {
      STRATA_ASSIGN_OR_RETURN(exists, Exists(ns.id(), keys, max_bytes));
    }
    std::vector<StagedItem> items;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (exists[i]) continue;
      const auto* src = static_cast<const std::byte*>(buffers[i].data);
      items.push_back({keys[i], i > 0 ? keys[i - 1] : BlockKey{}, max_bytes,
                       [=](std::byte* dst) { return Encode(codec, shape, src, dst, max_bytes); },
                       engine.empty() ? std::nullopt
                                      : std::optional(EngineInfo(ns, engine[i]))});
    }
    return StageAndCommit(ns, codec, items);
  }

  static Result<uint64_t> Encode(Codec codec, const kernels::BlockShape& shape,
                                 const std::byte* raw, std::byte* dst, uint64_t max_bytes) {
    if (codec == Codec::kNone) {
      std::memcpy(dst, raw, shape.bytes());
      return shape.bytes();
    }
    STRATA_ASSIGN_OR_RETURN(kernels::BlockCodec * c, ThreadCodec(codec, shape));
    uint64_t written = 0;
    STRATA_RETURN_IF_ERROR(
        FromKernel(c->Encode({raw, shape.bytes()}, {dst, max_bytes}, &written), "encoding"));
    return written;
  }

  Status CheckLocation(const ipc::Location& loc) const {
    if (loc.offset > channel_->pool_bytes() || loc.length > channel_->pool_bytes() - loc.offset)
      return Status::Internal("daemon returned a location outside its pool");
    return Status::OK();
  }

  Result<ipc::LoadReply> PinForLoad(const NamespaceId& ns, std::vector<BlockKey> keys) {
    const size_t n = keys.size();
    STRATA_ASSIGN_OR_RETURN(ipc::LoadReply reply, Expect<ipc::LoadReply>(channel_->Call(
                                                      ipc::LoadRequest{ns, keys, 0,
                                                                       RecomputeRate(ns)})));
    if (reply.locations.size() > n) return Status::Internal("daemon pinned more blocks than asked");
    for (const auto& loc : reply.locations) STRATA_RETURN_IF_ERROR(CheckLocation(loc));
    if (Status mapped = channel_->MapForRead(reply.locations); !mapped.ok()) {
      (void)ReleasePins(std::span<const BlockKey>(keys.data(), reply.locations.size()));
      return mapped;
    }
    return reply;
  }

  Result<size_t> DoLoad(const Namespace& ns, const std::vector<BlockKey>& keys,
                        const std::vector<MutableBuffer>& buffers) {
    STRATA_RETURN_IF_ERROR(EnsureOpen(ns));
    if (keys.size() != buffers.size())
      return Status::InvalidArgument("Load: " + std::to_string(keys.size()) + " keys but " +
                                     std::to_string(buffers.size()) + " buffers");
    if (keys.empty()) return size_t{0};
    const uint64_t block_bytes = ns.block_bytes();
    for (size_t i = 0; i < buffers.size(); ++i)
      if (buffers[i].data == nullptr || buffers[i].size < block_bytes)
        return Status::InvalidArgument("Load: buffer " + std::to_string(i) + " holds " +
                                       std::to_string(buffers[i].size) +
                                       " bytes, a block of this namespace has " +
                                       std::to_string(block_bytes));
    // A long prefix loads in chunks of about kLoadChunkBytes, pipelined: while this thread
    // copies chunk k out of the pool, a helper thread has the daemon pin chunk k+1 (and, in a
    // cluster, pull it from a peer first), so the copy overlaps the pull instead of following
    // the whole prefix's (docs/cluster.md, "Streamed loads"). The next chunk is asked for only
    // when this one was pinned whole; when this one ends short (a miss, a corrupt block) the
    // next is unpinned unread. A later chunk that fails ends the prefix there.
    const kernels::BlockShape shape = ShapeOf(ns.spec(), ns.spec().num_kv_heads);
    // Host-tier blocks the load index names load with no request (docs/data-plane.md, "Loads
    // without a round trip"); the rest of the prefix, from the first block it does not serve,
    // over IPC as before.
    const size_t fast = LoadThroughIndex(ns, shape, keys, buffers);
    if (fast == keys.size()) return fast;
    STRATA_ASSIGN_OR_RETURN(size_t rest,
                            LoadOverIpc(ns, shape, std::span<const BlockKey>(keys).subspan(fast),
                                        std::span<const MutableBuffer>(buffers).subspan(fast)));
    return fast + rest;
  }

  // The leading blocks of `keys` that the load index of `ns`'s tenant names, read from this
  // process's read-only pool mapping: entry read under its seqlock, payload copied (verified
  // against the entry's checksum with verify_loads; decoded for a codec) into the buffer, seqlock
  // checked again. Stops at the first block it cannot serve so (not indexed, slab not mapped at
  // the entry's generation, checksum or seqlock failed): that
  // block and the rest go over IPC. No system call on a hit; the hits are reported to the daemon
  // in batches (NoteLoad).
  size_t LoadThroughIndex(const Namespace& ns, const kernels::BlockShape& shape,
                          std::span<const BlockKey> keys, std::span<const MutableBuffer> buffers) {
    const store::LoadIndexView* view = IndexOf(ns.id());
    if (view == nullptr) return 0;
    const auto began = std::chrono::steady_clock::now();  // vDSO: no system call
    const Codec codec = ns.spec().codec;
    size_t n = 0;
    uint64_t bytes = 0;
    for (; n < keys.size(); ++n) {
      store::LoadIndexHit hit;
      if (!view->Find(keys[n], ns.id(), &hit) || hit.codec != codec ||
          !channel_->Readable(hit.offset, hit.length, hit.slab_generation))
        break;
      if (!CopyOutBlock(codec, shape, channel_->pool_base() + hit.offset, hit.length,
                        hit.checksum, verify_loads_, static_cast<std::byte*>(buffers[n].data)) ||
          !hit.StillValid())
        break;  // rewritten or being reused meanwhile: a miss here, IPC decides
      bytes += hit.length;
    }
    if (n > 0) NoteLoad(ns.id(), keys.first(n), bytes, began);
    return n;
  }

  // The load index view of `ns`'s tenant, mapped at the first load of `ns`; null when the channel
  // has none (embedded, a daemon without one, STRATA_LOAD_INDEX=off).
  const store::LoadIndexView* IndexOf(const NamespaceId& ns) {
    if (!use_index_) return nullptr;
    std::lock_guard<std::mutex> lock(index_mu_);
    auto it = index_views_.find(ns);
    if (it != index_views_.end()) return it->second;
    auto view = channel_->MapLoadIndex(ns);
    const store::LoadIndexView* v = view.ok() ? *view : nullptr;
    index_views_.emplace(ns, v);
    return v;
  }

  // Access notices (docs/data-plane.md, "Loads without a round trip"): each load through the
  // index is reported to the daemon in an AccessNotice (no reply): its keys (for the eviction
  // policy) and its block count, bytes and time (for the statistics and `strata inspect funnel`).
  // A load only appends them to the pending batch of its namespace under notice_mu_; a notice
  // thread, started at the first such load, sends the batches kNoticeDelay after the first load
  // of the batch, or as soon as kNoticeBatch keys are pending, and otherwise sleeps on a
  // condition variable without a timeout. So a load makes no system call but a wake-up of that
  // thread when it starts a batch or fills one (one per batch, not per load), and an idle client
  // still reports its last loads within about kNoticeDelay. At most kMaxNoticeKeys keys and as
  // many loads are held (more are dropped: the thread is behind, e.g. waiting for the channel
  // behind a long call).
  static constexpr size_t kNoticeBatch = 256;
  static constexpr size_t kMaxNoticeKeys = 4096;
  static constexpr std::chrono::milliseconds kNoticeDelay{10};
  void NoteLoad(const NamespaceId& ns, std::span<const BlockKey> keys, uint64_t bytes,
                std::chrono::steady_clock::time_point began) {
    const auto now = std::chrono::steady_clock::now();
    bool wake = false;
    {
      std::lock_guard<std::mutex> lock(notice_mu_);
      if (notice_stop_) return;  // the client is closing
      if (!notice_thread_.joinable()) notice_thread_ = std::thread([this] { NoticeLoop(); });
      const bool first = notice_loads_ == 0;
      if (first) notice_since_ = now;
      ipc::AccessNotice& batch = notices_[ns];
      batch.ns = ns;
      const size_t take = std::min(kMaxNoticeKeys - notice_keys_, keys.size());
      batch.keys.insert(batch.keys.end(), keys.begin(),
                        keys.begin() + static_cast<ptrdiff_t>(take));
      notice_keys_ += take;
      if (notice_loads_ < kMaxNoticeKeys) {
        batch.load_blocks.push_back(static_cast<uint32_t>(keys.size()));
        batch.load_seconds.push_back(std::chrono::duration<double>(now - began).count());
        batch.bytes += bytes;
        ++notice_loads_;
      }
      if (first && notice_idle_) wake = true;
      if (notice_keys_ >= kNoticeBatch && !notice_urgent_) wake = notice_urgent_ = true;
    }
    if (wake) notice_cv_.notify_one();
  }
  // The notice thread: sleeps until a batch is pending, sends it when it is due (or urgent).
  void NoticeLoop() {
    std::unique_lock<std::mutex> lock(notice_mu_);
    for (;;) {
      notice_idle_ = true;
      notice_cv_.wait(lock, [this] { return notice_loads_ > 0 || notice_stop_; });
      notice_idle_ = false;
      if (notice_stop_) return;  // StopNotices sends what is left
      notice_cv_.wait_until(lock, notice_since_ + kNoticeDelay,
                            [this] { return notice_urgent_ || notice_stop_; });
      if (notice_stop_) return;
      lock.unlock();
      FlushNotices();
      lock.lock();
    }
  }
  // Sends the pending batches now (Stats, close, the notice thread). Sends are serialised, so a
  // caller that returns has every load before its call reported.
  void FlushNotices() {
    std::lock_guard<std::mutex> send(notice_send_mu_);
    std::unordered_map<NamespaceId, ipc::AccessNotice, BlockKeyHash> batches;
    {
      std::lock_guard<std::mutex> lock(notice_mu_);
      batches.swap(notices_);
      notice_keys_ = 0;
      notice_loads_ = 0;
      notice_urgent_ = false;
    }
    for (auto& [ns, batch] : batches) {
      batch.recompute_tokens_per_second = RecomputeRate(ns);
      (void)channel_->Notify(std::move(batch));
    }
  }
  void StopNotices() {
    {
      std::lock_guard<std::mutex> lock(notice_mu_);
      notice_stop_ = true;
    }
    notice_cv_.notify_one();
    if (notice_thread_.joinable()) notice_thread_.join();
    FlushNotices();
  }

  Result<size_t> LoadOverIpc(const Namespace& ns, const kernels::BlockShape& shape,
                             std::span<const BlockKey> keys,
                             std::span<const MutableBuffer> buffers) {
    const uint64_t block_bytes = ns.block_bytes();
    const size_t chunk = static_cast<size_t>(std::max<uint64_t>(1, kLoadChunkBytes / block_bytes));
    auto pin_chunk = [this, &ns, keys, chunk](size_t begin) {
      const size_t end = std::min(keys.size(), begin + chunk);
      return PinForLoad(ns.id(), std::vector<BlockKey>(keys.begin() + begin, keys.begin() + end));
    };
    const std::span<const BlockKey> all(keys);
    STRATA_ASSIGN_OR_RETURN(ipc::LoadReply reply, pin_chunk(0));
    size_t loaded = 0;
    for (size_t begin = 0;;) {
      const size_t asked = std::min(chunk, keys.size() - begin);
      const size_t pinned = reply.locations.size();
      const size_t next_begin = begin + asked;
      std::future<Result<ipc::LoadReply>> next;
      if (pinned == asked && next_begin < keys.size())
        next = std::async(std::launch::async, pin_chunk, next_begin);
      size_t ok = 0;
      for (; ok < pinned; ++ok) {
        const ipc::Location& loc = reply.locations[ok];
        if (loc.codec != ns.spec().codec) break;  // not this namespace's bytes: a miss
        if (!CopyOutBlock(loc.codec, shape, channel_->pool_base() + loc.offset, loc.length,
                          loc.checksum, verify_loads_,
                          static_cast<std::byte*>(buffers[begin + ok].data)))
          break;  // a corrupt block is a miss: the prefix ends here
      }
      loaded += ok;
      const Status unpinned = ReleasePins(all.subspan(begin, pinned));
      if (!next.valid()) {
        STRATA_RETURN_IF_ERROR(unpinned);
        return loaded;
      }
      Result<ipc::LoadReply> following = next.get();
      if (ok < pinned || !unpinned.ok() || !following.ok()) {
        if (following.ok())
          (void)ReleasePins(all.subspan(next_begin, following->locations.size()));
        STRATA_RETURN_IF_ERROR(unpinned);
        return loaded;
      }
      reply = std::move(following).value();
      begin = next_begin;
    }
  }
  // Bytes per chunk of a pipelined Load (DoLoad): 64 MiB (32 blocks of 2 MiB). Each chunk costs
  // the daemon one Fetch (a request round trip to the holders), so fewer, larger chunks; the
  // serial tail left is the copy of the last chunk.
  static constexpr uint64_t kLoadChunkBytes = uint64_t{64} << 20;

  Result<size_t> DoStorePaged(const RegisteredCache& c, const std::vector<BlockKey>& keys,
                              const std::vector<int32_t>& ids,
                              const std::vector<EngineBlock>& engine) {
    if (keys.size() != ids.size())
      return Status::InvalidArgument("StorePaged: " + std::to_string(keys.size()) +
                                     " keys but " + std::to_string(ids.size()) + " block ids");
    STRATA_RETURN_IF_ERROR(CheckEngineBlocks("StorePaged", keys.size(), StoreOptions{engine}));
    if (keys.empty()) return size_t{0};
    if (c.device) return DoStorePagedDevice(c, keys, ids, engine);
    const Codec codec = c.ns.spec().codec;
    // Paged cross-memory stores when asked for (STRATA_STORE_PATH=cross_memory), and with `auto`
    // from caches in huge pages: from 4 KiB pages the daemon's gather, which pins every source
    // page, measured no faster than the client's gather through staging on the 2-core
    // development VM; from pages collapsed into 2 MiB ones it was the fastest store path there
    // (docs/benchmarks.md, "Engine KV in huge pages").
    // A cache shared with the daemon (ClientOptions::kv_share) is gathered from the daemon's own
    // mapping of it; its unaligned edges, if any, cross-memory.
    if (codec == Codec::kNone && c.share_id != 0 && (c.shared_whole || channel_->cross_memory()))
      return StorePagedCrossMemory(c, keys, ids, engine);
    if (codec == Codec::kNone && channel_->cross_memory() &&
        (forced_cross_memory_ || c.InHugePages()))
      return StorePagedCrossMemory(c, keys, ids, engine);
    const uint32_t heads = c.heads();
    const uint64_t shard_bytes = c.shard.bytes();
    uint64_t max_bytes = shard_bytes;
    if (codec != Codec::kNone) {
      STRATA_ASSIGN_OR_RETURN(kernels::BlockCodec * k, ThreadCodec(codec, c.shard));
      max_bytes = k->max_encoded_bytes();
    }
    // Codec none: a round's shards are gathered straight into staging, split over the copy
    // threads by ranges of blocks (the head-shard gather, rows of one head, a few hundred bytes
    // each, is the slower half of the store's pipeline); a shard cached already lands in a
    // throwaway buffer. Other codecs: each block's shards are gathered into this thread's scratch
    // and the missing ones encoded into staging.
    if (codec == Codec::kNone) {
      auto gather_round = [&](size_t first, size_t last, std::span<std::byte* const> dst,
                              std::span<uint64_t> lengths) -> Status {
        std::mutex error_mu;
        Status gather_error;
        copy_threads_.ParallelFor(
            last - first, std::max<uint64_t>(1, kParallelCopyMin / (uint64_t{heads} * shard_bytes)),
            [&](size_t b, size_t e) {
              std::vector<std::byte> own_discard;  // cached shards: one throwaway per range
              std::vector<std::span<std::byte>> d;
              d.reserve((e - b) * heads);
              for (size_t j = b * heads; j < e * heads; ++j) {
                if (dst[j] != nullptr) {
                  d.emplace_back(dst[j], shard_bytes);
                  continue;
                }
                if (own_discard.empty()) own_discard.resize(shard_bytes);
                d.emplace_back(own_discard.data(), shard_bytes);
              }
              Status st = FromKernel(
                  kernels::GatherHeadShardsCpu(
                      c.paged, c.const_layers,
                      std::span<const int32_t>(ids).subspan(first + b, e - b), d, 0,
                      c.paged.num_layers),
                  "StorePaged");
              if (!st.ok()) {
                std::lock_guard<std::mutex> lock(error_mu);
                if (gather_error.ok()) gather_error = st;
              }
            });
        std::fill(lengths.begin(), lengths.end(), shard_bytes);
        return gather_error;
      };
      return StorePagedRounds(c, keys, engine, max_bytes, gather_round);
    }
    thread_local std::vector<std::byte> scratch;
    if (scratch.size() < uint64_t{heads} * shard_bytes) scratch.resize(uint64_t{heads} * shard_bytes);
    auto encode_round = [&](size_t first, size_t last, std::span<std::byte* const> dst,
                            std::span<uint64_t> lengths) -> Status {
      std::vector<std::span<std::byte>> pieces(heads);
      for (uint32_t h = 0; h < heads; ++h)
        pieces[h] = {scratch.data() + uint64_t{h} * shard_bytes, shard_bytes};
      for (size_t i = first; i < last; ++i) {
        STRATA_RETURN_IF_ERROR(FromKernel(
            kernels::GatherHeadShardsCpu(c.paged, c.const_layers,
                                         std::span<const int32_t>(ids).subspan(i, 1), pieces, 0,
                                         c.paged.num_layers),
            "StorePaged"));
        for (uint32_t h = 0; h < heads; ++h) {
          const size_t j = (i - first) * heads + h;
          if (dst[j] == nullptr) continue;
          STRATA_ASSIGN_OR_RETURN(lengths[j],
                                  Encode(codec, c.shard, pieces[h].data(), dst[j], max_bytes));
        }
      }
      return Status::OK();
    };
    return StorePagedRounds(c, keys, engine, max_bytes, encode_round);
  }

  // The round loop of every staged paged store (host and device pages): rounds of blocks whose
  // missing head shards fit one staging round, round k's commit running while round k+1 is
  // written. `write_round(first, last, dst, lengths)` writes the head shards of blocks
  // [first, last): dst[j] is where shard j of the round (block-major) goes in staging, null for
  // one the daemon holds already; it sets lengths[j] to the bytes written there (<= max_bytes).
  template <typename WriteRound>
  Result<size_t> StorePagedRounds(const RegisteredCache& c, const std::vector<BlockKey>& keys,
                                  const std::vector<EngineBlock>& engine, uint64_t max_bytes,
                                  WriteRound& write_round) {
    const Codec codec = c.ns.spec().codec;
    const uint32_t heads = c.heads();
    std::vector<BlockKey> shard_keys = c.ShardKeys(keys);
    const auto shard_engine = ShardEngineInfo(c.ns, engine, heads, c.head_begin);
    STRATA_ASSIGN_OR_RETURN(std::vector<uint8_t> exists,
                            Exists(c.ns.id(), shard_keys, max_bytes));
    const uint64_t per_block = uint64_t{heads} * Aligned(max_bytes);
    if (per_block > staging_.bytes() / 2)
      return Status::NoSpace("StorePaged: one block needs " + std::to_string(per_block) +
                             " bytes of staging memory, the client has " +
                             std::to_string(staging_.bytes()) + " (ClientOptions::staging_bytes)");
    const uint64_t round_blocks = std::max<uint64_t>(1, RoundLimit() / per_block);
    CommitPipeline pipeline(channel_.get());
    std::vector<std::byte*> dst;
    std::vector<uint64_t> lengths;
    for (size_t first = 0; first < keys.size(); first += round_blocks) {
      const size_t last = std::min<size_t>(keys.size(), first + round_blocks);
      size_t missing = 0;
      for (size_t s = first * heads; s < last * heads; ++s) missing += !exists[s];
      if (missing == 0) continue;
      const uint64_t bytes = missing * Aligned(max_bytes);
      // An oversized round holds staging alone: never two such leases per call (no deadlock).
      if (bytes > RoundLimit()) STRATA_RETURN_IF_ERROR(pipeline.Drain());
      STRATA_ASSIGN_OR_RETURN(uint64_t base, staging_.Acquire(bytes));
      StagingLease lease(&staging_, base, bytes);
      std::byte* staging = channel_->staging_base();
      const size_t n = (last - first) * heads;
      dst.assign(n, nullptr);
      lengths.assign(n, 0);
      uint64_t at = base;
      for (size_t j = 0; j < n; ++j) {
        if (exists[first * heads + j]) continue;
        dst[j] = staging + at;
        at += Aligned(max_bytes);
      }
      STRATA_RETURN_IF_ERROR(write_round(first, last, std::span<std::byte* const>(dst),
                                         std::span<uint64_t>(lengths)));
      ipc::StoreCommitRequest commit{c.ns.id(), codec, {}, {}, {}, {}};
      commit.spec = DescribeOnce(c.ns);
      at = base;
      for (size_t j = 0; j < n; ++j) {
        const size_t s = first * heads + j;
        if (exists[s]) continue;
        AddToCommit(&commit, shard_keys[s], s >= heads ? shard_keys[s - heads] : BlockKey{}, at,
                    lengths[j]);
        if (!shard_engine.empty()) commit.engine_blocks.push_back(*shard_engine[s]);
        at += Aligned(max_bytes);
      }
      STRATA_RETURN_IF_ERROR(pipeline.Submit(std::move(commit), std::move(lease)));
    }
    STRATA_RETURN_IF_ERROR(pipeline.Drain());
    return pipeline.committed();
  }

  // StorePaged, codec none, cross-memory (docs/data-plane.md, "Cross-memory store"): the client
  // names each block's engine chunks and the daemon gathers the head shards out of them itself,
  // in commits of at most kCrossMemoryRoundBytes; nothing is written here. No StoreBegin: the
  // daemon skips the shards it holds.
  Result<size_t> StorePagedCrossMemory(const RegisteredCache& c,
                                       const std::vector<BlockKey>& keys,
                                       const std::vector<int32_t>& ids,
                                       const std::vector<EngineBlock>& engine) {
    for (size_t i = 0; i < ids.size(); ++i)
      if (ids[i] < 0 || static_cast<uint32_t>(ids[i]) >= c.paged.num_blocks)
        return Status::InvalidArgument("StorePaged: block id " + std::to_string(ids[i]) +
                                       " is outside [0, " + std::to_string(c.paged.num_blocks) +
                                       ")");
    const uint32_t heads = c.heads();
    const kernels::BlockShape shape = c.paged.block_shape();
    const uint64_t chunk = shape.chunk_bytes(), row = c.RowBytes();
    const uint32_t rows = heads == 1 ? 1 : c.paged.block_size;
    const uint32_t chunks_per_block = c.paged.num_layers * shape.planes;
    const uint64_t shard_bytes = c.shard.bytes();
    if (uint64_t{chunks_per_block} * rows * row != shard_bytes ||
        uint64_t{rows} * heads * row != chunk)
      return Status::Internal("StorePaged: engine chunks do not make up the head shards");
    const std::vector<BlockKey> shard_keys = c.ShardKeys(keys);
    const auto shard_engine = ShardEngineInfo(c.ns, engine, heads, c.head_begin);
    const size_t round_blocks =
        std::max<uint64_t>(1, kCrossMemoryRoundBytes / (uint64_t{heads} * shard_bytes));
    size_t committed = 0;
    for (size_t first = 0; first < keys.size(); first += round_blocks) {
      const size_t last = std::min(keys.size(), first + round_blocks);
      ipc::StoreCommitRequest commit{c.ns.id(), Codec::kNone, {}, {}, {}, {}};
      commit.spec = DescribeOnce(c.ns);
      ipc::CrossMemoryGather g;
      g.chunks_per_block = chunks_per_block;
      g.rows_per_chunk = rows;
      g.heads = heads;
      g.row_bytes = row;
      for (size_t i = first; i < last; ++i) {
        for (uint32_t l = 0; l < c.paged.num_layers; ++l)
          for (uint32_t p = 0; p < shape.planes; ++p)
            g.chunk_addresses.push_back(reinterpret_cast<uint64_t>(
                c.const_layers[l].data() +
                kernels::EngineChunkIndex(c.paged.layout, c.paged.num_blocks, uint64_t(ids[i]),
                                          p) *
                    chunk));
        for (uint32_t h = 0; h < heads; ++h) {
          const size_t s = i * heads + h;
          commit.keys.push_back(shard_keys[s]);
          commit.parents.push_back(s >= heads ? shard_keys[s - heads] : BlockKey{});
          commit.lengths.push_back(shard_bytes);
          g.blocks.push_back(static_cast<uint32_t>(i - first));
          g.key_heads.push_back(h);
          if (!shard_engine.empty()) commit.engine_blocks.push_back(*shard_engine[s]);
        }
      }
      commit.gather = std::move(g);
      STRATA_ASSIGN_OR_RETURN(ipc::StoreCommitReply reply,
                              Expect<ipc::StoreCommitReply>(channel_->Call(std::move(commit))));
      committed += reply.committed;
    }
    return committed;
  }

  // Loads the loadable prefix; with `layer_done`, scatters layer by layer and calls it after each
  // layer (the layerwise form), else block by block.
  // LoadPaged of a host-memory cache, codec none, not layer by layer, through the load index:
  // the leading blocks every shard of which the index names (mapped, this namespace, whole
  // shards), each shard hashed and scattered straight from the pool into the engine's pages
  // (ScatterWithChecksum) against the entry's checksum, then the entry's seqlock checked again
  // (LoadThroughIndex's protocol, docs/data-plane.md). Returns how many leading blocks loaded; a
  // block that fails a check had its pages written but is not counted (the caller loads it over
  // IPC, or the engine recomputes it). No system call on a hit; the loads are reported in access
  // notices (NoteLoad).
  size_t LoadPagedThroughIndex(const RegisteredCache& c, const std::vector<BlockKey>& shard_keys,
                               const std::vector<int32_t>& ids) {
    const store::LoadIndexView* view = IndexOf(c.ns.id());
    if (view == nullptr) return 0;
    const auto began = std::chrono::steady_clock::now();
    const uint32_t heads = c.heads();
    const uint64_t shard_bytes = c.shard.bytes();
    std::vector<store::LoadIndexHit> hits(shard_keys.size());
    size_t found = 0;  // leading blocks whose every shard the index names
    for (; found < ids.size(); ++found) {
      bool ok = true;
      for (uint32_t h = 0; h < heads && ok; ++h) {
        store::LoadIndexHit& hit = hits[found * heads + h];
        ok = view->Find(shard_keys[found * heads + h], c.ns.id(), &hit) &&
             hit.codec == Codec::kNone && hit.length == shard_bytes &&
             channel_->Readable(hit.offset, hit.length, hit.slab_generation);
      }
      if (!ok) break;
    }
    if (found == 0) return 0;
    std::vector<uint8_t> verified(found, 0);
    auto scatter = [&](size_t begin, size_t end) {
      std::vector<std::byte*> rows(c.RowsPerShard());
      for (size_t i = begin; i < end; ++i) {
        for (uint32_t h = 0; h < heads; ++h) {
          const store::LoadIndexHit& hit = hits[i * heads + h];
          c.ShardRows(ids[i], h, rows.data());
          if (!ScatterShard(channel_->pool_base() + hit.offset, shard_bytes, c.RowBytes(),
                            rows.data(), hit.checksum, verify_loads_) ||
              !hit.StillValid())
            return;  // this range stops at its first bad block
        }
        verified[i] = 1;
      }
    };
    copy_threads_.ParallelFor(
        found, std::max<uint64_t>(1, kParallelCopyMin / (uint64_t{heads} * shard_bytes)), scatter);
    size_t good = 0;
    while (good < found && verified[good]) ++good;
    if (good > 0)
      NoteLoad(c.ns.id(), std::span<const BlockKey>(shard_keys).first(good * heads),
               good * heads * shard_bytes, began);
    return good;
  }

  Result<size_t> DoLoadPaged(const RegisteredCache& c, const std::vector<BlockKey>& keys,
                             const std::vector<int32_t>& ids,
                             const std::function<void(uint32_t, size_t)>* layer_done,
                             bool try_index = true) {
    if (keys.size() != ids.size())
      return Status::InvalidArgument("LoadPaged: " + std::to_string(keys.size()) + " keys but " +
                                     std::to_string(ids.size()) + " block ids");
    for (size_t i = 0; i < ids.size(); ++i)
      if (ids[i] < 0 || static_cast<uint32_t>(ids[i]) >= c.paged.num_blocks)
        return Status::InvalidArgument("LoadPaged: block id " + std::to_string(ids[i]) +
                                       " is outside [0, " + std::to_string(c.paged.num_blocks) +
                                       ")");
    if (keys.empty()) return size_t{0};
    if (c.device) return DoLoadPagedDevice(c, keys, ids, layer_done);
    const uint32_t heads = c.heads();
    const uint64_t shard_bytes = c.shard.bytes();
    std::vector<BlockKey> shard_keys = c.ShardKeys(keys);
    if (try_index && layer_done == nullptr && c.ns.spec().codec == Codec::kNone) {
      // The leading blocks whose shards the load index names load with no request; the rest,
      // from the first block it does not serve, over IPC as below.
      const size_t fast = LoadPagedThroughIndex(c, shard_keys, ids);
      if (fast == keys.size()) return fast;
      if (fast > 0) {
        auto rest = DoLoadPaged(c, std::vector<BlockKey>(keys.begin() + fast, keys.end()),
                                std::vector<int32_t>(ids.begin() + fast, ids.end()), nullptr,
                                /*try_index=*/false);
        if (!rest.ok()) return fast;  // the prefix loaded so far stands
        return fast + *rest;
      }
    }
    STRATA_ASSIGN_OR_RETURN(ipc::LoadReply reply, PinForLoad(c.ns.id(), shard_keys));
    const size_t pinned = reply.locations.size();
    const size_t blocks = pinned / heads;
    const Codec codec = c.ns.spec().codec;
    // Codec none: shards are scattered straight from the pool once verified; else decoded into
    // scratch first. The layerwise form verifies (and decodes) every block before layer 0.
    const bool direct = codec == Codec::kNone;
    thread_local std::vector<std::byte> block_scratch;  // one block's shards (non-layerwise)
    std::vector<std::byte> request_scratch;              // every block's (layerwise)
    std::vector<std::byte>& scratch = layer_done ? request_scratch : block_scratch;
    std::vector<std::span<const std::byte>> src(blocks * heads);
    size_t good = 0;
    auto verify_block = [&](size_t i) -> bool {
      for (uint32_t h = 0; h < heads; ++h) {
        const size_t s = i * heads + h;
        const ipc::Location& loc = reply.locations[s];
        if (loc.codec != codec) return false;
        const std::byte* p = channel_->pool_base() + loc.offset;
        if (direct) {
          if (loc.length != shard_bytes ||
              !ChecksumOk(p, loc.length, loc.checksum, verify_loads_))
            return false;
          src[s] = {p, shard_bytes};
        } else {
          std::byte* out = scratch.data() + (layer_done ? s : h) * shard_bytes;
          if (!CopyOutBlock(codec, c.shard, p, loc.length, loc.checksum, verify_loads_, out))
            return false;
          src[s] = {out, shard_bytes};
        }
      }
      return true;
    };
    Status error;
    if (layer_done == nullptr && direct) {
      // One pass over the pool: each 64-byte stripe of a shard is read once, hashed and written to
      // its row of the engine's pages from the same registers (ScatterWithChecksum, non-temporal
      // stores). A block whose checksums fail ends the prefix: its pages were written but are
      // reported as not loaded (the engine recomputes them, as for any page past the count).
      // Loads of several MiB are split over the copy threads by ranges of blocks (copy_threads.h:
      // one core hashes and scatters at about half of memcpy's speed); each range stops at its
      // first bad block, and the loaded prefix ends at the first bad block of all.
      std::vector<uint8_t> verified(blocks, 0);
      auto scatter = [&](size_t begin, size_t end) {
        std::vector<std::byte*> rows(c.RowsPerShard());
        for (size_t i = begin; i < end; ++i) {
          bool ok = true;
          for (uint32_t h = 0; h < heads && ok; ++h) {
            const ipc::Location& loc = reply.locations[i * heads + h];
            if (loc.codec != codec || loc.length != shard_bytes) {
              ok = false;
              break;
            }
            c.ShardRows(ids[i], h, rows.data());
            ok = ScatterShard(channel_->pool_base() + loc.offset, shard_bytes, c.RowBytes(),
                              rows.data(), loc.checksum, verify_loads_);
          }
          if (!ok) return;
          verified[i] = 1;
        }
      };
      copy_threads_.ParallelFor(blocks, std::max<uint64_t>(1, kParallelCopyMin /
                                                                  (uint64_t{heads} * shard_bytes)),
                                scatter);
      while (good < blocks && verified[good]) ++good;
    } else if (layer_done == nullptr) {
      if (!direct && scratch.size() < uint64_t{heads} * shard_bytes)
        scratch.resize(uint64_t{heads} * shard_bytes);
      for (; good < blocks; ++good) {
        if (!verify_block(good)) break;
        error = FromKernel(
            kernels::ScatterHeadShardsCpu(c.paged, c.layers,
                                          std::span<const int32_t>(ids).subspan(good, 1),
                                          std::span(src).subspan(good * heads, heads), 0,
                                          c.paged.num_layers),
            "LoadPaged");
        if (!error.ok()) break;
      }
    } else {
      if (!direct) scratch.resize(blocks * heads * shard_bytes);
      while (good < blocks && verify_block(good)) ++good;
      for (uint32_t l = 0; l < c.paged.num_layers && error.ok(); ++l) {
        if (good > 0)
          error = FromKernel(kernels::ScatterHeadShardsCpu(
                                 c.paged, c.layers, std::span<const int32_t>(ids).first(good),
                                 std::span(src).first(good * heads), l, l + 1),
                             "LoadPaged");
        if (error.ok()) (*layer_done)(l, good);
      }
    }
    STRATA_RETURN_IF_ERROR(ReleasePins(std::span<const BlockKey>(shard_keys).first(pinned)));
    if (!error.ok()) return error;
    return good;
  }

  // --- KV caches in CUDA device memory (cuda_paged.h; docs/data-plane.md) ---

  // This client's CUDA registrations, made once; NotSupported without CUDA or a device.
  Result<DeviceMemory*> Devices() {
    std::lock_guard<std::mutex> lock(device_mu_);
    if (!device_memory_) {
      STRATA_ASSIGN_OR_RETURN(device_memory_, DeviceMemory::Create(channel_.get()));
    }
    return device_memory_.get();
  }

  // As DoStorePaged, the pages gathered by the device: straight into staging (codec none), into
  // device scratch and encoded into staging by the device (lossy codecs the CUDA codec takes), or
  // into pinned scratch and encoded by the CPU (lossless codecs). One synchronisation per round.
  Result<size_t> DoStorePagedDevice(const RegisteredCache& c, const std::vector<BlockKey>& keys,
                                    const std::vector<int32_t>& ids,
                                    const std::vector<EngineBlock>& engine) {
    DeviceKvCache& dev = *c.device;
    const Codec codec = c.ns.spec().codec;
    const uint32_t layers = c.paged.num_layers;
    const uint64_t shard_bytes = c.shard.bytes();
    uint64_t max_bytes = shard_bytes;
    if (codec != Codec::kNone) {
      STRATA_ASSIGN_OR_RETURN(kernels::BlockCodec * k, ThreadCodec(codec, c.shard));
      max_bytes = k->max_encoded_bytes();
    }
    const bool device_writes = codec == Codec::kNone || dev.device_codec();
    if (codec != Codec::kNone && dev.device_codec() && dev.encoded_bytes() > max_bytes)
      return Status::Internal("device codec payloads exceed the CPU codec's bound");
    std::vector<std::byte*> pieces;
    auto write_round = [&](size_t first, size_t last, std::span<std::byte* const> dst,
                           std::span<uint64_t> lengths) -> Status {
      const auto round_ids = std::span<const int32_t>(ids).subspan(first, last - first);
      auto lock = dev.Lock();
      if (device_writes) {
        STRATA_RETURN_IF_ERROR(codec == Codec::kNone ? dev.Gather(round_ids, dst, 0, layers)
                                                     : dev.GatherEncode(round_ids, dst));
        STRATA_RETURN_IF_ERROR(dev.Sync());
        std::fill(lengths.begin(), lengths.end(),
                  codec == Codec::kNone ? shard_bytes : dev.encoded_bytes());
        return Status::OK();
      }
      STRATA_ASSIGN_OR_RETURN(std::byte * scratch, dev.HostScratch(dst.size() * shard_bytes));
      pieces.assign(dst.size(), nullptr);
      for (size_t j = 0; j < dst.size(); ++j)
        if (dst[j] != nullptr) pieces[j] = scratch + j * shard_bytes;
      STRATA_RETURN_IF_ERROR(dev.Gather(round_ids, pieces, 0, layers));
      STRATA_RETURN_IF_ERROR(dev.Sync());
      for (size_t j = 0; j < dst.size(); ++j) {
        if (dst[j] == nullptr) continue;
        STRATA_ASSIGN_OR_RETURN(lengths[j],
                                Encode(codec, c.shard, pieces[j], dst[j], max_bytes));
      }
      return Status::OK();
    };
    return StorePagedRounds(c, keys, engine, max_bytes, write_round);
  }

  // As DoLoadPaged for device pages. Every shard is verified by the CPU before any byte reaches
  // the device; then, per round of blocks (the whole prefix when layerwise): codec none scatters
  // straight from the registered pool; lossy codecs the CUDA codec takes decode from the pool
  // into device scratch and scatter; lossless codecs (and any codec when the pool cannot be
  // registered read-only) verify and decode into pinned scratch, which is scattered. The
  // layerwise form enqueues layer after layer with an event each and completes WaitLayer(l) as
  // layer l's event fires.
  Result<size_t> DoLoadPagedDevice(const RegisteredCache& c, const std::vector<BlockKey>& keys,
                                   const std::vector<int32_t>& ids,
                                   const std::function<void(uint32_t, size_t)>* layer_done) {
    DeviceKvCache& dev = *c.device;
    STRATA_ASSIGN_OR_RETURN(DeviceMemory * memory, Devices());
    const uint32_t heads = c.heads(), layers = c.paged.num_layers;
    const uint64_t shard_bytes = c.shard.bytes();
    const Codec codec = c.ns.spec().codec;
    std::vector<BlockKey> shard_keys = c.ShardKeys(keys);
    STRATA_ASSIGN_OR_RETURN(ipc::LoadReply reply, PinForLoad(c.ns.id(), shard_keys));
    const size_t pinned = reply.locations.size();
    const size_t blocks = pinned / heads;
    const std::byte* pool = channel_->pool_base();
    size_t good = 0;
    Status error;
    {
      auto lock = dev.Lock();
      Result<bool> mapped = memory->MapPool(reply.locations);
      const bool pool_ok = mapped.ok() && *mapped;
      if (!mapped.ok()) error = mapped.status();
      enum class Mode { kPool, kDecode, kHost } mode = Mode::kHost;
      if (pool_ok && codec == Codec::kNone) mode = Mode::kPool;
      if (pool_ok && dev.device_codec()) {
        mode = Mode::kDecode;
        for (size_t s = 0; s < blocks * heads; ++s)
          if ((reinterpret_cast<uintptr_t>(pool + reply.locations[s].offset) & 15) != 0)
            mode = Mode::kHost;  // the CUDA decoder reads 16-byte vectors
      }
      // Rounds bound the scratch; the layerwise form takes the prefix in one round.
      const uint64_t per_block = uint64_t{heads} * shard_bytes;
      const size_t round_blocks =
          layer_done != nullptr || mode == Mode::kPool
              ? std::max<size_t>(blocks, 1)
              : std::max<size_t>(1, size_t{64 << 20} / per_block);
      std::vector<const std::byte*> src(blocks * heads);
      std::byte* scratch = nullptr;
      if (mode == Mode::kHost && blocks > 0 && error.ok()) {
        auto s = dev.HostScratch(std::min(blocks, round_blocks) * per_block);
        if (s.ok()) scratch = *s;
        else error = s.status();
      }
      // Verifies (and in host mode decodes) block i; src[] then names its device-readable shards.
      auto prepare = [&](size_t i, size_t round_first) -> bool {
        for (uint32_t h = 0; h < heads; ++h) {
          const size_t s = i * heads + h;
          const ipc::Location& loc = reply.locations[s];
          const std::byte* p = pool + loc.offset;
          if (loc.codec != codec) return false;
          switch (mode) {
            case Mode::kPool:
              if (loc.length != shard_bytes ||
                  !ChecksumOk(p, loc.length, loc.checksum, verify_loads_))
                return false;
              src[s] = p;
              break;
            case Mode::kDecode: {
              kernels::PayloadHeader header;
              if (loc.length != dev.encoded_bytes() ||
                  !ChecksumOk(p, loc.length, loc.checksum, verify_loads_) ||
                  !kernels::ReadPayloadHeader({p, loc.length}, static_cast<kernels::Codec>(codec),
                                              c.shard, &header)
                       .ok())
                return false;
              src[s] = p;
              break;
            }
            case Mode::kHost: {
              std::byte* out = scratch + ((i - round_first) * heads + h) * shard_bytes;
              if (!CopyOutBlock(codec, c.shard, p, loc.length, loc.checksum, verify_loads_, out))
                return false;
              src[s] = out;
              break;
            }
          }
        }
        return true;
      };
      bool stop = false;
      for (size_t first = 0; first < blocks && !stop && error.ok(); first += round_blocks) {
        const size_t last = std::min(blocks, first + round_blocks);
        size_t end = first;
        while (end < last && prepare(end, first)) ++end;
        stop = end < last;
        good = end;
        if (end == first) break;
        const auto round_ids = std::span<const int32_t>(ids).subspan(first, end - first);
        const auto round_src = std::span<const std::byte* const>(src).subspan(
            first * heads, (end - first) * heads);
        if (mode == Mode::kDecode) error = dev.Decode(round_src);
        if (layer_done == nullptr) {
          if (error.ok())
            error = mode == Mode::kDecode ? dev.ScatterDecoded(round_ids, 0, layers)
                                          : dev.Scatter(round_ids, round_src, 0, layers);
          if (error.ok()) error = dev.Sync();
        } else {
          for (uint32_t l = 0; l < layers && error.ok(); ++l) {
            error = mode == Mode::kDecode ? dev.ScatterDecoded(round_ids, l, l + 1)
                                          : dev.Scatter(round_ids, round_src, l, l + 1);
            if (error.ok()) error = dev.RecordLayer(l);
          }
          for (uint32_t l = 0; l < layers && error.ok(); ++l) {
            error = dev.WaitLayer(l);
            if (error.ok()) (*layer_done)(l, good);
          }
          if (error.ok()) error = dev.Sync();
        }
      }
      if (!error.ok()) (void)dev.Sync();  // nothing may still read the pool once it is unpinned
      if (layer_done != nullptr && good == 0 && error.ok())
        for (uint32_t l = 0; l < layers; ++l) (*layer_done)(l, 0);
    }
    STRATA_RETURN_IF_ERROR(ReleasePins(std::span<const BlockKey>(shard_keys).first(pinned)));
    if (!error.ok()) return error;
    return good;
  }

  // Opens `ns` on this connection once (OpenNamespaceRequest): the daemon checks its tenant
  // against this process's credentials before any request names it.
  Status EnsureOpen(const Namespace& ns) {
    {
      std::lock_guard<std::mutex> lock(opened_mu_);
      if (opened_.count(ns.id())) return Status::OK();
    }
    STRATA_ASSIGN_OR_RETURN(
        ipc::OpenNamespaceReply reply,
        Expect<ipc::OpenNamespaceReply>(channel_->Call(ipc::OpenNamespaceRequest{ns.encoding()})));
    if (reply.ns != ns.id())
      return Status::Internal("daemon fingerprinted namespace " + ns.id().ToHex() + " as " +
                              reply.ns.ToHex());
    std::lock_guard<std::mutex> lock(opened_mu_);
    opened_.insert(ns.id());
    return Status::OK();
  }

  std::unique_ptr<Channel> channel_;
  // Registrations of staging and the pool with CUDA, made at the first device cache (before
  // caches_: the caches use it).
  std::mutex device_mu_;
  std::unique_ptr<DeviceMemory> device_memory_;  // GUARDED_BY(device_mu_) until set
  std::mutex opened_mu_;
  std::unordered_set<NamespaceId, BlockKeyHash> opened_;  // GUARDED_BY(opened_mu_)

  StagingAllocator staging_;
  // STRATA_STORE_PATH / store_path is cross_memory: StorePaged (codec none) and a Store that fits
  // one staging round go cross-memory too (with `auto` they go through staging, except StorePaged
  // from caches in huge pages, RegisteredCache::InHugePages).
  const bool forced_cross_memory_;
  const ClientOptions::StorePath store_path_;
  const ClientOptions::KvHugePages kv_huge_pages_;
  const ClientOptions::KvShare kv_share_;
  std::mutex caches_mu_;
  std::mutex described_mu_;
  std::unordered_set<NamespaceId, BlockKeyHash> described_;  // GUARDED_BY(described_mu_)
  std::map<KvCacheId, std::shared_ptr<const RegisteredCache>> caches_;  // GUARDED_BY(caches_mu_)
  mutable std::mutex rates_mu_;
  std::map<NamespaceId, double> rates_;  // GUARDED_BY(rates_mu_): SetRecomputeRate
  KvCacheId next_cache_ = 1;                                             // GUARDED_BY(caches_mu_)
  // Loads through the load index (LoadThroughIndex).
  std::mutex index_mu_;
  std::unordered_map<NamespaceId, const store::LoadIndexView*, BlockKeyHash>
      index_views_;  // GUARDED_BY(index_mu_)
  // Access notices (NoteLoad): the pending batch per namespace and the thread that sends them.
  std::mutex notice_send_mu_;  // held while batches are taken and sent (order: before notice_mu_)
  std::mutex notice_mu_;
  std::condition_variable notice_cv_;
  std::unordered_map<NamespaceId, ipc::AccessNotice, BlockKeyHash>
      notices_;                                         // GUARDED_BY(notice_mu_)
  size_t notice_keys_ = 0;                              // GUARDED_BY(notice_mu_): keys pending
  size_t notice_loads_ = 0;                             // GUARDED_BY(notice_mu_): loads pending
  std::chrono::steady_clock::time_point notice_since_;  // GUARDED_BY(notice_mu_): first pending
  bool notice_idle_ = false;    // GUARDED_BY(notice_mu_): the thread waits for a first load
  bool notice_urgent_ = false;  // GUARDED_BY(notice_mu_): kNoticeBatch keys pending
  bool notice_stop_ = false;    // GUARDED_BY(notice_mu_)
  std::thread notice_thread_;   // started by the first load through the index
  // Background MADV_COLLAPSE of registered caches (kCollapse): its destructor cancels and joins
  // before the client returns from its own, so no collapse outlives the client.
  HugePageCollapser collapser_;
  CopyThreads copy_threads_;  // used by the workers: stops after them
  WorkerPool workers_;        // last: its threads stop before the members they use go
  const bool use_index_;
  const bool verify_loads_;  // Channel::verify_loads, fixed at connect
};

// Gathers layer by layer into scratch, then encodes and commits at Finish.
class LayerwiseStoreImpl final : public LayerwiseStore {
 public:
  // `pinned`: for a device cache, pinned host memory of every shard (the gather target).
  LayerwiseStoreImpl(ClientImpl* client, std::shared_ptr<const RegisteredCache> cache,
                     std::vector<BlockKey> keys, std::vector<int32_t> ids,
                     std::vector<BlockKey> shard_keys, std::vector<uint8_t> exists,
                     std::vector<std::optional<ipc::CommitEngineBlock>> shard_engine,
                     std::shared_ptr<std::byte> pinned = nullptr)
      : client_(client),
        c_(std::move(cache)),
        keys_(std::move(keys)),
        ids_(std::move(ids)),
        shard_keys_(std::move(shard_keys)),
        exists_(std::move(exists)),
        shard_engine_(std::move(shard_engine)),
        pinned_(std::move(pinned)),
        scratch_(pinned_ ? 0 : shard_keys_.size() * c_->shard.bytes()),
        layer_stored_(c_->paged.num_layers, false) {
    std::byte* base = pinned_ ? pinned_.get() : scratch_.data();
    for (size_t s = 0; s < shard_keys_.size(); ++s) {
      shards_.emplace_back(base + s * c_->shard.bytes(), c_->shard.bytes());
      shard_ptrs_.push_back(shards_.back().data());
    }
  }

  Status StoreLayer(uint32_t layer) override {
    if (layer >= layer_stored_.size())
      return Status::InvalidArgument("StoreLayer: layer " + std::to_string(layer) +
                                     " of a model of " + std::to_string(layer_stored_.size()));
    if (!keys_.empty() && c_->device) {  // the device gathers into pinned memory, now
      auto lock = c_->device->Lock();
      STRATA_RETURN_IF_ERROR(c_->device->Gather(ids_, shard_ptrs_, layer, layer + 1));
      STRATA_RETURN_IF_ERROR(c_->device->Sync());
    } else if (!keys_.empty()) {
      STRATA_RETURN_IF_ERROR(FromKernel(
          kernels::GatherHeadShardsCpu(c_->paged, c_->const_layers, ids_, shards_, layer,
                                       layer + 1),
          "StoreLayer"));
    }
    layer_stored_[layer] = true;
    return Status::OK();
  }

  Completion<size_t> Finish() override {
    return client_->Async<size_t>([this]() -> Result<size_t> {
      for (size_t l = 0; l < layer_stored_.size(); ++l)
        if (!layer_stored_[l])
          return Status::InvalidArgument("Finish: layer " + std::to_string(l) +
                                         " was never stored");
      const Codec codec = c_->ns.spec().codec;
      uint64_t max_bytes = c_->shard.bytes();
      if (codec != Codec::kNone) {
        STRATA_ASSIGN_OR_RETURN(kernels::BlockCodec * k, ThreadCodec(codec, c_->shard));
        max_bytes = k->max_encoded_bytes();
      }
      const uint32_t heads = c_->heads();
      std::vector<StagedItem> items;
      for (size_t s = 0; s < shard_keys_.size(); ++s) {
        if (exists_[s]) continue;
        const std::byte* raw = shards_[s].data();
        const RegisteredCache* c = c_.get();
        items.push_back({shard_keys_[s], s >= heads ? shard_keys_[s - heads] : BlockKey{},
                         max_bytes,
                         [=](std::byte* out) {
                           return ClientImpl::Encode(codec, c->shard, raw, out, max_bytes);
                         },
                         shard_engine_.empty() ? std::nullopt : shard_engine_[s]});
      }
      return client_->StageAndCommit(c_->ns, codec, items);
    });
  }

 private:
  ClientImpl* client_;
  std::shared_ptr<const RegisteredCache> c_;
  std::vector<BlockKey> keys_;
  std::vector<int32_t> ids_;
  std::vector<BlockKey> shard_keys_;
  std::vector<uint8_t> exists_;
  std::vector<std::optional<ipc::CommitEngineBlock>> shard_engine_;  // empty, or one per shard
  std::shared_ptr<std::byte> pinned_;
  std::vector<std::byte> scratch_;
  std::vector<std::span<std::byte>> shards_;
  std::vector<std::byte*> shard_ptrs_;
  std::vector<bool> layer_stored_;
};

// Completes layer by layer: a worker verifies the prefix, then scatters one layer at a time.
class LayerwiseLoadImpl final : public LayerwiseLoad {
 public:
  explicit LayerwiseLoadImpl(uint32_t layers) : layers_(layers) {}

  Result<size_t> WaitLayer(uint32_t layer) override {
    if (layer >= layers_)
      return Status::InvalidArgument("WaitLayer: layer " + std::to_string(layer) +
                                     " of a model of " + std::to_string(layers_));
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_layers_ > layer || finished_; });
    if (done_layers_ > layer) return blocks_;
    return error_.ok() ? Status::Internal("layerwise load ended early") : error_;
  }

  void LayerDone(uint32_t layer, size_t blocks) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_layers_ = layer + 1;
      blocks_ = blocks;
    }
    cv_.notify_all();
  }
  void Finished(Status st) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      finished_ = true;
      error_ = std::move(st);
    }
    cv_.notify_all();
  }

 private:
  const uint32_t layers_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint32_t done_layers_ = 0;  // GUARDED_BY(mu_)
  size_t blocks_ = 0;         // GUARDED_BY(mu_)
  bool finished_ = false;     // GUARDED_BY(mu_)
  Status error_;              // GUARDED_BY(mu_)
};

Result<std::unique_ptr<LayerwiseStore>> ClientImpl::StorePagedLayerwise(
    KvCacheId cache, std::span<const BlockKey> keys, std::span<const int32_t> block_ids,
    const StoreOptions& options) {
  STRATA_ASSIGN_OR_RETURN(auto c, Cache(cache));
  STRATA_RETURN_IF_ERROR(CheckEngineBlocks("StorePagedLayerwise", keys.size(), options));
  if (keys.size() != block_ids.size())
    return Status::InvalidArgument("StorePagedLayerwise: " + std::to_string(keys.size()) +
                                   " keys but " + std::to_string(block_ids.size()) +
                                   " block ids");
  for (int32_t id : block_ids)
    if (id < 0 || static_cast<uint32_t>(id) >= c->paged.num_blocks)
      return Status::InvalidArgument("StorePagedLayerwise: block id " + std::to_string(id) +
                                     " is outside [0, " + std::to_string(c->paged.num_blocks) +
                                     ")");
  std::vector<BlockKey> shard_keys = c->ShardKeys(keys);
  std::vector<uint8_t> exists;
  if (!shard_keys.empty()) {
    uint64_t max_bytes = c->shard.bytes();
    if (c->ns.spec().codec != Codec::kNone) {
      STRATA_ASSIGN_OR_RETURN(kernels::BlockCodec * k, ThreadCodec(c->ns.spec().codec, c->shard));
      max_bytes = k->max_encoded_bytes();
    }
    STRATA_ASSIGN_OR_RETURN(exists, Exists(c->ns.id(), shard_keys, max_bytes));
  }
  auto shard_engine = ShardEngineInfo(c->ns, options.engine_blocks, c->heads(), c->head_begin);
  std::shared_ptr<std::byte> pinned;
  if (c->device && !shard_keys.empty()) {
    STRATA_ASSIGN_OR_RETURN(pinned,
                            c->device->PinnedBuffer(shard_keys.size() * c->shard.bytes()));
  }
  return std::unique_ptr<LayerwiseStore>(new LayerwiseStoreImpl(
      this, std::move(c), {keys.begin(), keys.end()}, {block_ids.begin(), block_ids.end()},
      std::move(shard_keys), std::move(exists), std::move(shard_engine), std::move(pinned)));
}

Result<std::unique_ptr<LayerwiseLoad>> ClientImpl::LoadPagedLayerwise(
    KvCacheId cache, std::span<const BlockKey> keys, std::span<const int32_t> block_ids) {
  STRATA_ASSIGN_OR_RETURN(auto c, Cache(cache));
  auto load = std::make_shared<LayerwiseLoadImpl>(c->paged.num_layers);
  std::vector<BlockKey> k(keys.begin(), keys.end());
  std::vector<int32_t> ids(block_ids.begin(), block_ids.end());
  workers_.Submit([this, c, load, k = std::move(k), ids = std::move(ids)] {
    std::function<void(uint32_t, size_t)> done = [&](uint32_t l, size_t n) {
      load->LayerDone(l, n);
    };
    auto r = DoLoadPaged(*c, k, ids, &done);
    load->Finished(r.ok() ? Status::OK() : r.status());
  });
  // The caller's handle shares the state with the worker.
  struct Handle final : LayerwiseLoad {
    std::shared_ptr<LayerwiseLoadImpl> impl;
    Result<size_t> WaitLayer(uint32_t layer) override { return impl->WaitLayer(layer); }
  };
  auto h = std::make_unique<Handle>();
  h->impl = std::move(load);
  return std::unique_ptr<LayerwiseLoad>(std::move(h));
}

}  // namespace

std::string_view KvLayoutName(KvLayout layout) {
  switch (layout) {
    case KvLayout::kVllmFlashAttn: return "vllm";
    case KvLayout::kFlashInfer: return "flashinfer";
    case KvLayout::kMla: return "mla";
  }
  return "unknown";
}

Result<KvLayout> ParseKvLayout(std::string_view name) {
  for (KvLayout l : {KvLayout::kVllmFlashAttn, KvLayout::kFlashInfer, KvLayout::kMla})
    if (name == KvLayoutName(l)) return l;
  return Status::InvalidArgument("unknown KV layout '" + std::string(name) +
                                 "' (vllm, flashinfer, mla)");
}

Result<std::unique_ptr<Client>> Client::Connect(const std::string& socket_path,
                                                const ClientOptions& options) {
  const std::string path = socket_path.empty() ? ipc::DefaultSocketPath() : socket_path;
  STRATA_ASSIGN_OR_RETURN(const ClientSettings settings, SettingsOf(options));
  const ClientOptions::StorePath store_path = settings.store_path;
  const SocketChannel::CrossMemory cross_memory =
      store_path == ClientOptions::StorePath::kStaging    ? SocketChannel::CrossMemory::kOff
      : store_path == ClientOptions::StorePath::kAuto     ? SocketChannel::CrossMemory::kOffer
                                                          : SocketChannel::CrossMemory::kRequired;
  STRATA_ASSIGN_OR_RETURN(
      std::unique_ptr<SocketChannel> ch,
      SocketChannel::Open(path, options.request_timeout_ms, options.staging_bytes,
                          options.trusted_daemon_uids, cross_memory));
  // The pool mapped now, so that loads never map and, its page tables filled, never fault
  // (ClientOptions::map_pool). kAuto: filled on this thread up to 1 GiB (at most ~0.2 s), above
  // that on the filler's thread (0.2 s per GiB of pool, and pages the daemon has not populated
  // yet would be allocated by MAP_POPULATE here: an 8 GiB pool connected in 11 s).
  constexpr uint64_t kFillAtConnectMaxBytes = uint64_t{1} << 30;
  ClientOptions::MapPool map_pool = settings.map_pool;
  if (map_pool == ClientOptions::MapPool::kAuto)
    map_pool = ch->pool_bytes() <= kFillAtConnectMaxBytes ? ClientOptions::MapPool::kConnect
                                                          : ClientOptions::MapPool::kBackground;
  const bool fill_now = map_pool == ClientOptions::MapPool::kConnect;
  const bool fill_later = map_pool == ClientOptions::MapPool::kBackground;
  if (fill_now || fill_later)
    STRATA_RETURN_IF_ERROR(
        ch->MapPool(fill_now).WithContext("mapping the daemon's host pool at connect"));
  if (fill_later) ch->FillPoolInBackground();
  return std::unique_ptr<Client>(new ClientImpl(std::move(ch), options, settings));
}

Result<std::unique_ptr<Client>> Client::Embedded(const EmbeddedOptions& options,
                                                 const ClientOptions& client_options) {
  STRATA_ASSIGN_OR_RETURN(const ClientSettings settings, SettingsOf(client_options));
  NodeOptions node;
  node.host_pool_bytes = options.host_pool_bytes;
  node.data_dir = options.data_dir;
  node.disk_bytes = options.disk_bytes;
  if (!options.eviction_policy.empty()) node.eviction_policy = options.eviction_policy;
  STRATA_ASSIGN_OR_RETURN(const bool verify_loads,
                          ResolveEnumSetting(kVerifyLoads, options.verify_loads));
  STRATA_ASSIGN_OR_RETURN(
      std::unique_ptr<EmbeddedChannel> ch,
      EmbeddedChannel::Open(node, client_options.staging_bytes, verify_loads));
  return std::unique_ptr<Client>(new ClientImpl(std::move(ch), client_options, settings));
}

}  // namespace strata
