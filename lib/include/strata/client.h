// The engine-facing C++ API of Strata (docs/client-api.md).
//
// A Client talks to a `strata serve` daemon over its Unix domain socket (Client::Connect) or runs
// the same cache in-process (Client::Embedded): the two share every line of request logic. KV bytes
// never cross the socket: the daemon hands the client its host pool as a shared-memory descriptor,
// Store copies each block from the engine's buffer straight into the pool (one copy, its checksum
// computed on the way), and Load copies it straight out (one copy, verified on the way).
//
// Thread-safety: a Client may be used from many threads at once. Asynchronous calls run on the
// client's worker threads; the buffers passed to them must stay valid until Wait() returns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <chrono>
#include <future>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "strata/block_key.h"
#include "strata/namespace.h"
#include "strata/result.h"
#include "strata/status.h"

namespace strata {

// Where a block is cached.
enum class BlockTier : uint8_t { kNone = 0, kHost = 1, kDisk = 2, kDevice = 3, kRemote = 4 };
std::string_view BlockTierName(BlockTier tier);

struct LookupResult {
  size_t matched_blocks = 0;     // leading blocks cached somewhere
  size_t matched_tokens = 0;     // matched_blocks x block size (token lookups only)
  std::vector<BlockKey> keys;    // every full block's key (token lookups only)
  std::vector<BlockTier> tiers;  // tier of each matched block
};

struct ConstBuffer {
  const void* data = nullptr;
  size_t size = 0;
};
struct MutableBuffer {
  void* data = nullptr;
  size_t size = 0;
};

// The result of an asynchronous call. Wait() blocks until it is done and may be called once.
template <typename T>
class Completion {
 public:
  Completion() = default;
  explicit Completion(std::future<Result<T>> f) : future_(std::move(f)) {}
  bool Ready() const {
    return future_.valid() &&
           future_.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
  }
  Result<T> Wait() {
    if (!future_.valid()) return Status::InvalidArgument("Completion already waited for");
    return future_.get();
  }

 private:
  std::future<Result<T>> future_;
};

// Options of an embedded (in-process) cache. Defaults as for `strata serve`.
struct EmbeddedOptions {
  uint64_t host_pool_bytes = 256ull << 20;  // Default: 256 MiB.
  std::string data_dir;                     // disk tier directory; empty: none. Default: "".
  uint64_t disk_bytes = 0;                  // Default: 0 = 80% of free space.
  std::string eviction_policy = "prefix";   // "prefix" or "lru". Default: "prefix".
};

struct ClientOptions {
  int worker_threads = 2;       // threads running asynchronous calls. Default: 2.
  int request_timeout_ms = 30000;  // a daemon that does not answer in time fails the call.
};

class Client {
 public:
  // Connects to the daemon at `socket_path` (empty: the daemon's default path).
  static Result<std::unique_ptr<Client>> Connect(const std::string& socket_path = "",
                                                 const ClientOptions& options = {});
  // Runs the cache in this process, without a daemon.
  static Result<std::unique_ptr<Client>> Embedded(const EmbeddedOptions& options = {},
                                                  const ClientOptions& client_options = {});
  virtual ~Client() = default;

  // The longest cached prefix of `keys` and where each block is.
  virtual Result<LookupResult> Lookup(std::span<const BlockKey> keys) = 0;
  // Keys `tokens` in `ns` (full blocks only), then looks them up.
  virtual Result<LookupResult> Lookup(const Namespace& ns, std::span<const uint32_t> tokens) = 0;

  // Starts bringing disk blocks of `keys` into host memory; completes with how many were queued.
  virtual Completion<uint32_t> Prefetch(std::span<const BlockKey> keys) = 0;

  // Stores buffers[i] as the payload of keys[i] (codec ns.spec().codec). Keys already cached are
  // skipped. Completes with the number of blocks newly stored.
  // REQUIRES: keys.size() == buffers.size(); the buffers stay valid until Wait() returns.
  virtual Completion<size_t> Store(const Namespace& ns, std::span<const BlockKey> keys,
                                   std::span<const ConstBuffer> buffers) = 0;

  // Loads the longest cached prefix of `keys` into `buffers`, verifying every checksum; completes
  // with the number of leading blocks loaded (a block that fails verification ends the prefix).
  // InvalidArgument when a buffer is smaller than its block.
  // REQUIRES: keys.size() == buffers.size(); the buffers stay valid until Wait() returns.
  virtual Completion<size_t> Load(std::span<const BlockKey> keys,
                                  std::span<const MutableBuffer> buffers) = 0;

  // Pins the longest cached prefix in host memory (for pin_ms; 0: the daemon default) so that a
  // later Load finds it there; returns how many leading blocks were pinned.
  virtual Result<size_t> Pin(std::span<const BlockKey> keys, uint32_t pin_ms = 0) = 0;
  virtual Status Unpin(std::span<const BlockKey> keys) = 0;

  // Daemon and tier statistics as a JSON object.
  virtual Result<std::string> Stats() = 0;
  // Erases every unpinned block of `ns` (every namespace when nullopt); returns how many.
  virtual Result<uint64_t> Clear(std::optional<NamespaceId> ns) = 0;
};

}  // namespace strata
