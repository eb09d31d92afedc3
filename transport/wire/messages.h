// Strata's peer-to-peer wire format (docs/wire-protocol.md): control messages in versioned frames,
// and the fixed binary header of data messages. This header is the only view the rest of the
// project has of the wire: the generated Protobuf code stays inside transport/wire/.
//
// Control frame, 16 bytes then the Protobuf body, integers little-endian:
//
//   offset size field
//   ------ ---- -----------------------------------------------------------
//        0    4 magic "STWR" (0x53 0x54 0x57 0x52)
//        4    2 protocol version (kProtocolVersion)
//        6    2 message type (MessageType)
//        8    4 body length in bytes (<= kMaxControlBody)
//       12    4 XXH3-64 (seed 0) of the body, low 32 bits
//       16    n body: the Protobuf message named by the type
//
// Data message (one per pulled block): the UCX active-message header is a DataHeader (below), the
// active-message payload is the block (64-byte block header + payload).
//
// Thread-safety: pure functions and value types.
#pragma once

#include <cstddef>
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "strata/block_key.h"
#include "strata/result.h"
#include "strata/status.h"

namespace strata::wire {

// 2: keys carry their namespace's tag and blocks are block format 2 (docs/keys.md); a node of
// version 1 computes other keys and sends headers a version-2 node refuses, so the two refuse each
// other at Hello instead of failing every pull.
inline constexpr uint16_t kProtocolVersion = 2;
inline constexpr uint32_t kFrameMagic = 0x52575453;  // "STWR" in little-endian byte order
inline constexpr size_t kFrameHeaderSize = 16;
// Largest control body we encode or accept. A lookup of 64K keys is ~1.2 MiB.
inline constexpr size_t kMaxControlBody = size_t{4} << 20;
// Largest number of keys in one lookup, announce or pull.
inline constexpr size_t kMaxKeysPerMessage = 65536;
inline constexpr size_t kNonceSize = 32;
inline constexpr size_t kMacSize = 32;  // HMAC-SHA256

// Values are part of the wire format: never reuse.
enum class MessageType : uint16_t {
  kHello = 1,
  kHelloAck = 2,
  kAuth = 3,
  kAuthOk = 4,
  kError = 5,
  kLookupRequest = 6,
  kLookupResponse = 7,
  kAnnounce = 8,
  kAnnounceAck = 9,
  kPullRequest = 10,
  kMappedBlocks = 11,
  kPullRelease = 12,
};

std::string_view MessageTypeName(MessageType type);

struct Hello {
  uint32_t protocol_version = kProtocolVersion;
  std::string node_id;
  std::vector<std::byte> nonce;  // kNonceSize bytes
  std::vector<std::byte> worker_address;
  uint64_t request_id = 0;
};

struct HelloAck {
  std::string node_id;
  std::vector<std::byte> nonce;       // kNonceSize bytes
  std::vector<std::byte> server_mac;  // kMacSize bytes
  uint64_t request_id = 0;
};

struct Auth {
  std::vector<std::byte> client_mac;  // kMacSize bytes
  uint64_t request_id = 0;
  std::string node_id;
};

// A session token: kSessionSize random bytes from AuthOk, carried by every request.
inline constexpr size_t kSessionSize = 16;

// A process's place on its host (AuthOk.same_host): a puller maps a holder's pool only when
// all but `pid` equal its own (docs/cluster.md, "Same-host pulls from the holder's pool mapping").
struct SameHost {
  std::string boot_id;
  uint64_t net_ns = 0;
  uint64_t pid_ns = 0;
  uint32_t uid = 0;
  uint32_t pid = 0;

  friend bool operator==(const SameHost&, const SameHost&) = default;
};

struct AuthOk {
  uint64_t request_id = 0;
  std::vector<std::byte> session;  // kSessionSize bytes
  std::optional<SameHost> same_host;  // set when the server offers mapped pulls
};

struct ErrorMessage {
  uint64_t request_id = 0;
  StatusCode code = StatusCode::kInternal;
  std::string message;

  Status ToStatus() const;
};

struct LookupRequest {
  uint64_t request_id = 0;
  std::vector<BlockKey> keys;
  std::vector<std::byte> session;
};

struct LookupResponse {
  uint64_t request_id = 0;
  std::vector<std::vector<std::string>> holders;  // one list per requested key
};

struct Announce {
  uint64_t request_id = 0;
  std::string holder_id;
  std::vector<BlockKey> added;
  std::vector<BlockKey> evicted;
  bool replace = false;
  std::vector<std::byte> session;
};

struct AnnounceAck {
  uint64_t request_id = 0;
};

struct PullRequest {
  uint64_t request_id = 0;
  NamespaceId namespace_id;
  std::vector<BlockKey> keys;
  std::vector<uint64_t> capacities;  // one per key: bytes reserved (block header + payload)
  std::vector<std::byte> session;
  // > 0: this puller takes several blocks per data message (the multi-block form below), of at
  // most this many payload bytes. 0: one block per message. Old holders ignore it.
  uint64_t max_message_bytes = 0;
  // True: answer blocks at hand with MappedBlocks instead of their bytes. Old holders ignore it.
  bool mapped = false;
};

// Where one pinned block lies in the holder's pool (a mapped pull's answer).
struct MappedBlock {
  uint32_t index = 0;
  uint32_t slab = 0;
  uint32_t generation = 0;
  int32_t fd = -1;
  uint64_t offset = 0;
  uint64_t length = 0;
  std::array<std::byte, 64> header{};  // the block header (block_format.h)
};

// At most this many blocks per MappedBlocks message (~100 bytes each: well under kMaxControlBody).
inline constexpr size_t kMaxMappedPerMessage = 8192;

struct MappedBlocks {
  uint64_t request_id = 0;
  std::vector<MappedBlock> blocks;
};

struct PullRelease {
  uint64_t request_id = 0;
  std::vector<std::byte> session;
};

using Message = std::variant<Hello, HelloAck, Auth, AuthOk, ErrorMessage, LookupRequest,
                             LookupResponse, Announce, AnnounceAck, PullRequest, MappedBlocks,
                             PullRelease>;

MessageType TypeOf(const Message& message);

// Encodes `message` into a frame. InvalidArgument when the message breaks a limit above (too many
// keys, wrong nonce or MAC size, body over kMaxControlBody).
Result<std::vector<std::byte>> EncodeFrame(const Message& message);

// Decodes one frame. Errors, each with a message naming what was wrong:
//  - Corruption: shorter than a frame header, bad magic, length disagreeing with the bytes given,
//    body checksum mismatch, a body Protobuf cannot parse, a key that is not 16 bytes;
//  - NotSupported: a protocol version other than kProtocolVersion, an unknown message type;
//  - InvalidArgument: a limit exceeded (body size, key count, nonce/MAC size).
Result<Message> DecodeFrame(std::span<const std::byte> frame);

// Reads only the version field of a frame that has at least a full frame header; for error
// reports to peers that speak another version.
Result<uint16_t> PeekFrameVersion(std::span<const std::byte> frame);

// The header of a data message: the UCX active-message header of every pulled block.
//
//   offset size field
//   ------ ---- -----------------------------------------------------------
//        0    4 magic "STDT" (0x53 0x54 0x44 0x54)
//        4    2 protocol version
//        6    1 status (strata::StatusCode; kOk when a block follows)
//        7    1 reserved, 0
//        8    8 request id (PullRequest.request_id)
//       16    4 index of the key in the PullRequest
//       20    4 reserved, 0
//       24    8 block bytes that follow (block header + payload; 0 unless status is kOk)
inline constexpr uint32_t kDataMagic = 0x54445453;  // "STDT"
inline constexpr size_t kDataHeaderSize = 32;

struct DataHeader {
  StatusCode status = StatusCode::kOk;
  uint64_t request_id = 0;
  uint32_t index = 0;
  uint64_t length = 0;

  friend bool operator==(const DataHeader&, const DataHeader&) = default;
};

void EncodeDataHeader(const DataHeader& header, std::span<std::byte, kDataHeaderSize> out);
// Corruption on a wrong size or magic, NotSupported on another protocol version.
Result<DataHeader> DecodeDataHeader(std::span<const std::byte> in);

// The header of a multi-block data message, sent only to a puller whose PullRequest set
// max_message_bytes: several blocks of one request in one active message. The payload is the
// blocks' payloads (without their headers), in entry order, back to back.
//
//   offset size field
//   ------ ---- -----------------------------------------------------------
//        0    4 magic "STDM" (0x53 0x54 0x44 0x4d)
//        4    2 protocol version
//        6    2 block count n (>= 1)
//        8    8 request id (PullRequest.request_id)
//       16    8 payload bytes that follow (the sum of the blocks' payload lengths)
//       24  72n per block: 4 index of the key in the PullRequest, 4 payload bytes of this block
//              in the message, 64 the block header (checked by the puller: a bad one fails
//              that block alone, its bytes are dropped)
inline constexpr uint32_t kMultiDataMagic = 0x4d445453;  // "STDM"
inline constexpr size_t kMultiHeaderSize = 24;
inline constexpr size_t kMultiEntrySize = 72;

struct MultiDataHeader {
  uint64_t request_id = 0;
  uint64_t length = 0;
  uint16_t count = 0;
  std::span<const std::byte> entries;  // count * kMultiEntrySize bytes, inside the decoded input

  uint32_t IndexAt(size_t i) const;
  uint32_t LengthAt(size_t i) const;
  std::span<const std::byte, 64> BlockHeaderAt(size_t i) const;
};

size_t MultiDataHeaderSize(size_t count);
// Writes the fixed part; REQUIRES: out.size() >= kMultiHeaderSize. Entries follow it.
void EncodeMultiDataHeader(uint64_t request_id, uint64_t length, uint16_t count,
                           std::span<std::byte> out);
void EncodeMultiEntry(uint32_t index, uint32_t length, std::span<const std::byte, 64> block_header,
                      std::span<std::byte, kMultiEntrySize> out);
// Corruption on a short input, a bad magic, a count of 0 or one that disagrees with the size;
// NotSupported on another protocol version. The entries are not checked here.
Result<MultiDataHeader> DecodeMultiDataHeader(std::span<const std::byte> in);

}  // namespace strata::wire
