// The engine <-> daemon control protocol as plain C++ values (docs/client-protocol.md), and its
// encoding. This header is the only view lib/ has of the protocol: the generated Protobuf code
// (strata_ipc.proto) stays inside lib/ipc/.
//
// A message on the socket is a 4-byte little-endian body length (<= kMaxMessageBytes) followed by
// the body: a Protobuf `Request` (client -> daemon) or `Response` (daemon -> client).
//
// Thread-safety: pure functions and value types.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "strata/block_key.h"
#include "strata/engine_keys.h"
#include "strata/namespace.h"
#include "strata/result.h"
#include "strata/status.h"
#include "strata/tier.h"

namespace strata::ipc {

// 4: block keys carry their namespace's 32-bit tag (docs/keys.md, "Namespace tag"); a version-3
// client computes untagged keys, which a daemon would refuse block by block, so Hello refuses it.
inline constexpr uint32_t kIpcProtocolVersion = 4;
inline constexpr size_t kLengthPrefixBytes = 4;
// Largest message body either side sends or accepts; larger lengths close the connection.
inline constexpr size_t kMaxMessageBytes = size_t{8} << 20;
// Largest number of keys in one request (a 1M-token prompt at block size 16 is 65536 blocks).
inline constexpr size_t kMaxKeysPerRequest = 131072;

// Where a block is: strata::Tier (strata/tier.h), whose values the protocol carries.
using ::strata::Tier;
using ::strata::TierName;

struct Hello {
  uint32_t protocol_version = kIpcProtocolVersion;
  std::string client_name;
  uint64_t staging_bytes = 0;  // bytes of the staging memfd sent with the Hello
  // Nonzero: the client permits cross-memory stores and names 64 bytes of its memory the daemon
  // tries to read once (docs/data-plane.md, "Cross-memory store"). 0: staging only.
  uint64_t cross_memory_probe = 0;
};
struct HelloReply {
  uint32_t protocol_version = kIpcProtocolVersion;
  uint64_t pool_bytes = 0;
  std::string daemon_version;
  uint64_t slab_bytes = 0;  // the pool is mapped slab by slab (MapSlabRequest)
  bool cross_memory = false;  // the daemon read the Hello's probe: commits may name addresses
  // Clients hash every block they load against its checksum (the daemon's verify_loads).
  bool verify_loads = true;
};
struct LookupRequest {
  std::vector<BlockKey> keys;
  std::optional<NamespaceId> ns;  // for statistics only (per-namespace hits and misses)
};
struct LookupReply {
  uint32_t matched = 0;
  std::vector<Tier> tiers;  // one per matched key
};
struct StoreBeginRequest {
  NamespaceId ns;
  std::vector<BlockKey> keys;
  std::vector<uint64_t> sizes;  // per key, an upper bound of its payload bytes; empty: unknown
};
struct StoreBeginReply {
  std::vector<uint8_t> exists;  // one per key: 1 = cached already
};
// pb::EngineBlock: what the engine publishes for one block of a commit.
struct CommitEngineBlock {
  bool secondary_shard = false;  // a head shard other than head 0: no events of its own
  EngineBlock block;             // unset for a secondary shard
  uint32_t block_size = 0;
  std::string lora_name;
};
// Blocks written into the client's staging memfd, to be copied into the pool and published.
// Head shards the daemon gathers out of a client's paged KV cache (cross-memory paged commit).
// An engine chunk is [rows_per_chunk][heads][row_bytes] at one client address; key i's payload is,
// for each chunk of block blocks[i] in order, the rows of head key_heads[i].
struct CrossMemoryGather {
  uint32_t chunks_per_block = 0;  // layers x planes
  uint32_t rows_per_chunk = 0;
  uint32_t heads = 0;
  uint64_t row_bytes = 0;
  std::vector<uint64_t> chunk_addresses;  // chunks_per_block per block
  std::vector<uint32_t> blocks;           // per key
  std::vector<uint32_t> key_heads;        // per key
};
struct StoreCommitRequest {
  NamespaceId ns;
  Codec codec = Codec::kNone;
  std::vector<BlockKey> keys;
  std::vector<BlockKey> parents;  // one per key; BlockKey{} (all zero): no parent
  std::vector<uint64_t> staging_offsets;
  std::vector<uint64_t> lengths;  // payload bytes
  // The namespace behind `ns`, sent with a connection's first commit of it (for the inspector;
  // the daemon records it only when it fingerprints to `ns`). nullopt: not sent.
  std::optional<NamespaceSpec> spec = std::nullopt;
  // Empty, or one per key (engine key schemes; docs/kv-events.md "Engine hashes").
  std::vector<CommitEngineBlock> engine_blocks = {};
  // Cross-memory commit: one address in the client's memory per key (then staging_offsets is
  // empty); codec none only. Empty: the payloads are in staging.
  std::vector<uint64_t> source_addresses = {};
  // Cross-memory paged commit (then staging_offsets and source_addresses are empty).
  std::optional<CrossMemoryGather> gather = std::nullopt;
};
struct StoreCommitReply {
  uint32_t committed = 0;  // newly published
  uint32_t existed = 0;    // skipped: cached already
};
struct LoadRequest {
  NamespaceId ns;
  std::vector<BlockKey> keys;
  uint32_t pin_ms = 0;  // 0: the daemon's default pin expiry
  // The engine's prefill rate for `ns` (Client::SetRecomputeRate): `strata inspect funnel` weighs
  // this load against recomputing at it. 0: not reported.
  double recompute_tokens_per_second = 0;
};
struct Location {
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t checksum = 0;
  Codec codec = Codec::kNone;
  // Generation of the slab holding the block (offset / slab_bytes): a client whose mapping of the
  // slab is of another generation maps it again (MapSlabRequest) before reading.
  uint32_t generation = 0;
};
struct LoadReply {
  std::vector<Location> locations;  // the pinned prefix, in key order
};
struct UnpinRequest {
  std::vector<BlockKey> keys;
};
struct UnpinReply {};
struct PrefetchRequest {
  std::vector<BlockKey> keys;
};
struct PrefetchReply {
  uint32_t queued = 0;
};
struct StatsRequest {};
struct StatsReply {
  std::string json;
};
struct ClearRequest {
  std::optional<NamespaceId> ns;  // nullopt: every namespace
};
struct ClearReply {
  uint64_t erased = 0;
};
// `strata inspect` (docs/operations.md, "Inspector"); the reply is a JSON object.
struct InspectRequest {
  std::string command;             // "node", "namespaces", "prefix", "key" or "ls"
  std::optional<NamespaceId> ns;
  std::vector<BlockKey> keys;      // prefix: the chain; key: one key
  std::optional<NamespaceSpec> spec;  // prefix: the caller's namespace
  std::vector<uint32_t> tokens;    // prefix: the tokens
  std::string tier;                // ls: "" (every tier), "device", "host" or "disk"
  uint32_t limit = 0;              // ls: at most this many (0: 1000)
  bool verify = false;             // key: check the payload's checksum now
  std::string sort;                // ls: "namespace" (default), "key" or "bytes"
  double window_s = 0;             // funnel: seconds back from now (0: 300)
  uint32_t deadline_ms = 0;        // funnel: a load slower than this did not help (0: 1000)
  double recompute_tokens_per_second = 0;  // funnel: the engine's prefill rate (0: unknown)
};
struct InspectReply {
  std::string json;
};
// Opens a namespace on this connection: the daemon fingerprints `encoding` itself
// (Namespace::encoding(), docs/keys.md) and checks that the caller's credentials allow the
// namespace's tenant (its salt). Until then, requests naming the namespace are refused when the
// daemon has private tenants.
struct OpenNamespaceRequest {
  std::vector<std::byte> encoding;
};
struct OpenNamespaceReply {
  NamespaceId ns;
};
// A read-only descriptor of one slab of the pool, sent with the reply; PermissionDenied when the
// slab holds the bytes of a tenant the caller may not use.
struct MapSlabRequest {
  uint32_t slab = 0;
};
struct MapSlabReply {
  uint32_t generation = 0;
};

// A read-only descriptor of the load index segment of `ns`'s tenant, sent with the reply
// (docs/data-plane.md, "Loads without a round trip"); PermissionDenied as a Load of `ns` would be.
struct MapLoadIndexRequest {
  NamespaceId ns;
};
struct MapLoadIndexReply {
  uint32_t tenant = 0;
  uint64_t bytes = 0;  // the segment's size
};
// Blocks of `ns` a client loaded through the load index: the daemon records an access of each
// for its eviction policy, and the loads they came from in its statistics and `strata inspect
// funnel`, as it would Load requests. No reply (Channel::Notify).
struct AccessNotice {
  NamespaceId ns;
  std::vector<BlockKey> keys;  // may be cut short (the client holds a bounded number)
  // The client's loads these keys came from, one entry each: the blocks it loaded through the
  // index and the seconds that took (the client's clock, copy and checksum included). The
  // daemon ignores the entries when the two lists differ in length or a value is not finite.
  std::vector<uint32_t> load_blocks;
  std::vector<double> load_seconds;
  uint64_t bytes = 0;                      // payload bytes of those loads
  double recompute_tokens_per_second = 0;  // the engine's prefill rate for `ns`; 0: not reported
};

// The engine's host KV cache on a sealed memfd, sent with the request (docs/data-plane.md,
// "Engine KV through the daemon's own mapping"): range i is [client_addresses[i], + lengths[i])
// of the client, at offsets[i] of the memfd of `bytes` bytes. The daemon maps it read-only.
struct ShareKvRequest {
  uint64_t bytes = 0;
  std::vector<uint64_t> client_addresses;
  std::vector<uint64_t> lengths;
  std::vector<uint64_t> offsets;
};
struct ShareKvReply {
  uint64_t id = 0;
};
struct UnshareKvRequest {
  uint64_t id = 0;
};
struct UnshareKvReply {};

using RequestBody = std::variant<Hello, LookupRequest, StoreBeginRequest, StoreCommitRequest,
                                 LoadRequest, UnpinRequest, PrefetchRequest, StatsRequest,
                                 ClearRequest, InspectRequest, OpenNamespaceRequest,
                                 MapSlabRequest, MapLoadIndexRequest, AccessNotice,
                                 ShareKvRequest, UnshareKvRequest>;
struct Request {
  uint64_t id = 0;
  RequestBody body;
};

using ResponseBody =
    std::variant<std::monostate, HelloReply, LookupReply, StoreBeginReply, StoreCommitReply,
                 LoadReply, UnpinReply, PrefetchReply, StatsReply, ClearReply, InspectReply,
                 OpenNamespaceReply, MapSlabReply, MapLoadIndexReply, ShareKvReply,
                 UnshareKvReply>;
struct Response {
  uint64_t id = 0;
  Status status;  // not OK: body is empty
  ResponseBody body;
};

// Encode to a Protobuf body (no length prefix).
std::string EncodeRequest(const Request& request);
std::string EncodeResponse(const Response& response);

// Decode a body. InvalidArgument on anything malformed: unparsable Protobuf, no body, keys that
// are not a multiple of 16 bytes or too many, mismatched list lengths, unknown enum values.
Result<Request> DecodeRequest(std::span<const std::byte> body);
Result<Response> DecodeResponse(std::span<const std::byte> body);

}  // namespace strata::ipc
