#include "transport/wire/messages.h"

#include <cstring>
#include <string>
#include <type_traits>

#include "strata/block_format.h"
#include "wire/strata_wire.pb.h"  // generated, build tree

namespace strata::wire {
namespace {

template <typename T>
void StoreLE(std::byte* p, T v) {
  static_assert(std::is_unsigned_v<T>);
  for (size_t i = 0; i < sizeof(T); ++i) p[i] = static_cast<std::byte>((v >> (8 * i)) & 0xff);
}

template <typename T>
T LoadLE(const std::byte* p) {
  static_assert(std::is_unsigned_v<T>);
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<T>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

std::string ToBytesString(std::span<const std::byte> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

std::vector<std::byte> FromBytesString(const std::string& s) {
  std::vector<std::byte> out(s.size());
  if (!s.empty()) std::memcpy(out.data(), s.data(), s.size());
  return out;
}

std::string KeyString(const BlockKey& k) {
  auto b = k.ToBytes();
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

Status CheckKeyCount(size_t n, std::string_view what) {
  if (n > kMaxKeysPerMessage)
    return Status::InvalidArgument(std::string(what) + ": " + std::to_string(n) +
                                   " keys exceed the limit of " +
                                   std::to_string(kMaxKeysPerMessage));
  return Status::OK();
}

Status CheckSize(size_t got, size_t want, std::string_view what) {
  if (got != want)
    return Status::InvalidArgument(std::string(what) + " must be " + std::to_string(want) +
                                   " bytes, not " + std::to_string(got));
  return Status::OK();
}

Status ParseKeys(const google::protobuf::RepeatedPtrField<std::string>& in,
                 std::vector<BlockKey>* out, std::string_view what) {
  STRATA_RETURN_IF_ERROR(CheckKeyCount(in.size(), what));
  out->reserve(in.size());
  for (int i = 0; i < in.size(); ++i) {
    const std::string& s = in.Get(i);
    if (s.size() != BlockKey::kSize)
      return Status::Corruption(std::string(what) + ": key " + std::to_string(i) + " is " +
                                std::to_string(s.size()) + " bytes, not 16");
    out->push_back(BlockKey::FromBytes(
        std::span<const std::byte, 16>(reinterpret_cast<const std::byte*>(s.data()), 16)));
  }
  return Status::OK();
}

void AddKeys(const std::vector<BlockKey>& keys,
             google::protobuf::RepeatedPtrField<std::string>* out) {
  out->Reserve(static_cast<int>(keys.size()));
  for (const BlockKey& k : keys) out->Add(KeyString(k));
}

// Serialises the Protobuf for `message` into `body`.
Status EncodeBody(const Message& message, std::string* body) {
  return std::visit(
      [&](const auto& m) -> Status {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, Hello>) {
          STRATA_RETURN_IF_ERROR(CheckSize(m.nonce.size(), kNonceSize, "Hello.nonce"));
          pb::Hello p;
          p.set_protocol_version(m.protocol_version);
          p.set_node_id(m.node_id);
          p.set_nonce(ToBytesString(m.nonce));
          p.set_worker_address(ToBytesString(m.worker_address));
          p.set_request_id(m.request_id);
          p.SerializeToString(body);
        } else if constexpr (std::is_same_v<T, HelloAck>) {
          STRATA_RETURN_IF_ERROR(CheckSize(m.nonce.size(), kNonceSize, "HelloAck.nonce"));
          STRATA_RETURN_IF_ERROR(CheckSize(m.server_mac.size(), kMacSize, "HelloAck.server_mac"));
          pb::HelloAck p;
          p.set_node_id(m.node_id);
          p.set_nonce(ToBytesString(m.nonce));
          p.set_server_mac(ToBytesString(m.server_mac));
          p.set_request_id(m.request_id);
          p.SerializeToString(body);
        } else if constexpr (std::is_same_v<T, Auth>) {
          STRATA_RETURN_IF_ERROR(CheckSize(m.client_mac.size(), kMacSize, "Auth.client_mac"));
          pb::Auth p;
          p.set_client_mac(ToBytesString(m.client_mac));
          p.set_request_id(m.request_id);
          p.set_node_id(m.node_id);
          p.SerializeToString(body);
        } else if constexpr (std::is_same_v<T, AuthOk>) {
          STRATA_RETURN_IF_ERROR(CheckSize(m.session.size(), kSessionSize, "AuthOk.session"));
          pb::AuthOk p;
          p.set_request_id(m.request_id);
          p.set_session(ToBytesString(m.session));
          if (m.same_host) {
            auto* h = p.mutable_same_host();
            h->set_boot_id(m.same_host->boot_id);
            h->set_net_ns(m.same_host->net_ns);
            h->set_pid_ns(m.same_host->pid_ns);
            h->set_uid(m.same_host->uid);
            h->set_pid(m.same_host->pid);
          }
          p.SerializeToString(body);
        } else if constexpr (std::is_same_v<T, ErrorMessage>) {
          pb::Error p;
          p.set_request_id(m.request_id);
          p.set_code(static_cast<uint32_t>(m.code));
          p.set_message(m.message);
          p.SerializeToString(body);
        } else if constexpr (std::is_same_v<T, LookupRequest>) {
          STRATA_RETURN_IF_ERROR(CheckKeyCount(m.keys.size(), "LookupRequest"));
          pb::LookupRequest p;
          p.set_request_id(m.request_id);
          AddKeys(m.keys, p.mutable_keys());
          p.set_session(ToBytesString(m.session));
          p.SerializeToString(body);
        } else if constexpr (std::is_same_v<T, LookupResponse>) {
          STRATA_RETURN_IF_ERROR(CheckKeyCount(m.holders.size(), "LookupResponse"));
          pb::LookupResponse p;
          p.set_request_id(m.request_id);
          for (const auto& hs : m.holders) {
            auto* h = p.add_holders();
            for (const auto& id : hs) h->add_node_ids(id);
          }
          p.SerializeToString(body);
        } else if constexpr (std::is_same_v<T, Announce>) {
          STRATA_RETURN_IF_ERROR(CheckKeyCount(m.added.size() + m.evicted.size(), "Announce"));
          pb::Announce p;
          p.set_request_id(m.request_id);
          p.set_holder_id(m.holder_id);
          AddKeys(m.added, p.mutable_added());
          AddKeys(m.evicted, p.mutable_evicted());
          p.set_replace(m.replace);
          p.set_session(ToBytesString(m.session));
          p.SerializeToString(body);
        } else if constexpr (std::is_same_v<T, AnnounceAck>) {
          pb::AnnounceAck p;
          p.set_request_id(m.request_id);
          p.SerializeToString(body);
        } else if constexpr (std::is_same_v<T, PullRequest>) {
          STRATA_RETURN_IF_ERROR(CheckKeyCount(m.keys.size(), "PullRequest"));
          if (m.capacities.size() != m.keys.size())
            return Status::InvalidArgument("PullRequest: one capacity per key is required");
          pb::PullRequest p;
          p.set_request_id(m.request_id);
          p.set_namespace_id(KeyString(m.namespace_id));
          AddKeys(m.keys, p.mutable_keys());
          for (uint64_t c : m.capacities) p.add_capacities(c);
          p.set_session(ToBytesString(m.session));
          p.set_max_message_bytes(m.max_message_bytes);
          p.set_mapped(m.mapped);
          p.SerializeToString(body);
        } else if constexpr (std::is_same_v<T, MappedBlocks>) {
          if (m.blocks.size() > kMaxMappedPerMessage)
            return Status::InvalidArgument("MappedBlocks: " + std::to_string(m.blocks.size()) +
                                           " blocks exceed the limit of " +
                                           std::to_string(kMaxMappedPerMessage));
          pb::MappedBlocks p;
          p.set_request_id(m.request_id);
          for (const MappedBlock& b : m.blocks) {
            auto* e = p.add_blocks();
            e->set_index(b.index);
            e->set_slab(b.slab);
            e->set_generation(b.generation);
            e->set_fd(b.fd);
            e->set_offset(b.offset);
            e->set_length(b.length);
            e->set_header(ToBytesString(b.header));
          }
          p.SerializeToString(body);
        } else if constexpr (std::is_same_v<T, PullRelease>) {
          pb::PullRelease p;
          p.set_request_id(m.request_id);
          p.set_session(ToBytesString(m.session));
          p.SerializeToString(body);
        }
        return Status::OK();
      },
      message);
}

template <typename P>
Status ParseProto(std::span<const std::byte> body, P* p, MessageType type) {
  if (!p->ParseFromArray(body.data(), static_cast<int>(body.size())))
    return Status::Corruption(std::string(MessageTypeName(type)) +
                              ": body is not a valid Protobuf message");
  return Status::OK();
}

Result<Message> DecodeBody(MessageType type, std::span<const std::byte> body) {
  switch (type) {
    case MessageType::kHello: {
      pb::Hello p;
      STRATA_RETURN_IF_ERROR(ParseProto(body, &p, type));
      STRATA_RETURN_IF_ERROR(CheckSize(p.nonce().size(), kNonceSize, "Hello.nonce"));
      Hello m;
      m.protocol_version = p.protocol_version();
      m.node_id = p.node_id();
      m.nonce = FromBytesString(p.nonce());
      m.worker_address = FromBytesString(p.worker_address());
      m.request_id = p.request_id();
      return Message(std::move(m));
    }
    case MessageType::kHelloAck: {
      pb::HelloAck p;
      STRATA_RETURN_IF_ERROR(ParseProto(body, &p, type));
      STRATA_RETURN_IF_ERROR(CheckSize(p.nonce().size(), kNonceSize, "HelloAck.nonce"));
      STRATA_RETURN_IF_ERROR(CheckSize(p.server_mac().size(), kMacSize, "HelloAck.server_mac"));
      HelloAck m;
      m.node_id = p.node_id();
      m.nonce = FromBytesString(p.nonce());
      m.server_mac = FromBytesString(p.server_mac());
      m.request_id = p.request_id();
      return Message(std::move(m));
    }
    case MessageType::kAuth: {
      pb::Auth p;
      STRATA_RETURN_IF_ERROR(ParseProto(body, &p, type));
      STRATA_RETURN_IF_ERROR(CheckSize(p.client_mac().size(), kMacSize, "Auth.client_mac"));
      return Message(Auth{FromBytesString(p.client_mac()), p.request_id(), p.node_id()});
    }
    case MessageType::kAuthOk: {
      pb::AuthOk p;
      STRATA_RETURN_IF_ERROR(ParseProto(body, &p, type));
      STRATA_RETURN_IF_ERROR(CheckSize(p.session().size(), kSessionSize, "AuthOk.session"));
      AuthOk m{p.request_id(), FromBytesString(p.session()), std::nullopt};
      if (p.has_same_host())
        m.same_host = SameHost{p.same_host().boot_id(), p.same_host().net_ns(),
                               p.same_host().pid_ns(), p.same_host().uid(), p.same_host().pid()};
      return Message(std::move(m));
    }
    case MessageType::kError: {
      pb::Error p;
      STRATA_RETURN_IF_ERROR(ParseProto(body, &p, type));
      ErrorMessage m;
      m.request_id = p.request_id();
      m.code = (p.code() == 0 || p.code() > static_cast<uint32_t>(StatusCode::kInternal))
                   ? StatusCode::kInternal
                   : static_cast<StatusCode>(p.code());
      m.message = p.message();
      return Message(std::move(m));
    }
    case MessageType::kLookupRequest: {
      pb::LookupRequest p;
      STRATA_RETURN_IF_ERROR(ParseProto(body, &p, type));
      LookupRequest m;
      m.request_id = p.request_id();
      STRATA_RETURN_IF_ERROR(ParseKeys(p.keys(), &m.keys, "LookupRequest"));
      m.session = FromBytesString(p.session());
      return Message(std::move(m));
    }
    case MessageType::kLookupResponse: {
      pb::LookupResponse p;
      STRATA_RETURN_IF_ERROR(ParseProto(body, &p, type));
      STRATA_RETURN_IF_ERROR(CheckKeyCount(p.holders_size(), "LookupResponse"));
      LookupResponse m;
      m.request_id = p.request_id();
      m.holders.reserve(p.holders_size());
      for (const auto& h : p.holders())
        m.holders.emplace_back(h.node_ids().begin(), h.node_ids().end());
      return Message(std::move(m));
    }
    case MessageType::kAnnounce: {
      pb::Announce p;
      STRATA_RETURN_IF_ERROR(ParseProto(body, &p, type));
      Announce m;
      m.request_id = p.request_id();
      m.holder_id = p.holder_id();
      m.replace = p.replace();
      STRATA_RETURN_IF_ERROR(CheckKeyCount(p.added_size() + p.evicted_size(), "Announce"));
      STRATA_RETURN_IF_ERROR(ParseKeys(p.added(), &m.added, "Announce.added"));
      STRATA_RETURN_IF_ERROR(ParseKeys(p.evicted(), &m.evicted, "Announce.evicted"));
      m.session = FromBytesString(p.session());
      return Message(std::move(m));
    }
    case MessageType::kAnnounceAck: {
      pb::AnnounceAck p;
      STRATA_RETURN_IF_ERROR(ParseProto(body, &p, type));
      return Message(AnnounceAck{p.request_id()});
    }
    case MessageType::kPullRequest: {
      pb::PullRequest p;
      STRATA_RETURN_IF_ERROR(ParseProto(body, &p, type));
      PullRequest m;
      m.request_id = p.request_id();
      if (p.namespace_id().size() != 16)
        return Status::Corruption("PullRequest: namespace id is " +
                                  std::to_string(p.namespace_id().size()) + " bytes, not 16");
      m.namespace_id = BlockKey::FromBytes(std::span<const std::byte, 16>(
          reinterpret_cast<const std::byte*>(p.namespace_id().data()), 16));
      STRATA_RETURN_IF_ERROR(ParseKeys(p.keys(), &m.keys, "PullRequest"));
      if (p.capacities_size() != p.keys_size())
        return Status::Corruption("PullRequest: " + std::to_string(p.capacities_size()) +
                                  " capacities for " + std::to_string(p.keys_size()) + " keys");
      m.capacities.assign(p.capacities().begin(), p.capacities().end());
      m.session = FromBytesString(p.session());
      m.max_message_bytes = p.max_message_bytes();
      m.mapped = p.mapped();
      return Message(std::move(m));
    }
    case MessageType::kMappedBlocks: {
      pb::MappedBlocks p;
      STRATA_RETURN_IF_ERROR(ParseProto(body, &p, type));
      if (static_cast<size_t>(p.blocks_size()) > kMaxMappedPerMessage)
        return Status::InvalidArgument("MappedBlocks: " + std::to_string(p.blocks_size()) +
                                       " blocks exceed the limit of " +
                                       std::to_string(kMaxMappedPerMessage));
      MappedBlocks m;
      m.request_id = p.request_id();
      m.blocks.reserve(p.blocks_size());
      for (const auto& e : p.blocks()) {
        if (e.header().size() != 64)
          return Status::Corruption("MappedBlocks: a block header is " +
                                    std::to_string(e.header().size()) + " bytes, not 64");
        MappedBlock b;
        b.index = e.index();
        b.slab = e.slab();
        b.generation = e.generation();
        b.fd = e.fd();
        b.offset = e.offset();
        b.length = e.length();
        std::memcpy(b.header.data(), e.header().data(), 64);
        m.blocks.push_back(b);
      }
      return Message(std::move(m));
    }
    case MessageType::kPullRelease: {
      pb::PullRelease p;
      STRATA_RETURN_IF_ERROR(ParseProto(body, &p, type));
      return Message(PullRelease{p.request_id(), FromBytesString(p.session())});
    }
  }
  return Status::NotSupported("unknown message type " +
                              std::to_string(static_cast<unsigned>(type)));
}

}  // namespace

std::string_view MessageTypeName(MessageType type) {
  switch (type) {
    case MessageType::kHello:
      return "Hello";
    case MessageType::kHelloAck:
      return "HelloAck";
    case MessageType::kAuth:
      return "Auth";
    case MessageType::kAuthOk:
      return "AuthOk";
    case MessageType::kError:
      return "Error";
    case MessageType::kLookupRequest:
      return "LookupRequest";
    case MessageType::kLookupResponse:
      return "LookupResponse";
    case MessageType::kAnnounce:
      return "Announce";
    case MessageType::kAnnounceAck:
      return "AnnounceAck";
    case MessageType::kPullRequest:
      return "PullRequest";
    case MessageType::kMappedBlocks:
      return "MappedBlocks";
    case MessageType::kPullRelease:
      return "PullRelease";
  }
  return "unknown";
}

Status ErrorMessage::ToStatus() const {
  return Status(code == StatusCode::kOk ? StatusCode::kInternal : code, message);
}

MessageType TypeOf(const Message& message) { return static_cast<MessageType>(message.index() + 1); }

Result<std::vector<std::byte>> EncodeFrame(const Message& message) {
  std::string body;
  STRATA_RETURN_IF_ERROR(EncodeBody(message, &body));
  if (body.size() > kMaxControlBody)
    return Status::InvalidArgument("control message of " + std::to_string(body.size()) +
                                   " bytes exceeds the limit of " +
                                   std::to_string(kMaxControlBody));
  std::vector<std::byte> frame(kFrameHeaderSize + body.size());
  std::byte* p = frame.data();
  StoreLE<uint32_t>(p, kFrameMagic);
  StoreLE<uint16_t>(p + 4, kProtocolVersion);
  StoreLE<uint16_t>(p + 6, static_cast<uint16_t>(TypeOf(message)));
  StoreLE<uint32_t>(p + 8, static_cast<uint32_t>(body.size()));
  if (!body.empty()) std::memcpy(p + kFrameHeaderSize, body.data(), body.size());
  const auto checksum =
      PayloadChecksum(std::span<const std::byte>(p + kFrameHeaderSize, body.size()));
  StoreLE<uint32_t>(p + 12, static_cast<uint32_t>(checksum));
  return frame;
}

Result<uint16_t> PeekFrameVersion(std::span<const std::byte> frame) {
  if (frame.size() < kFrameHeaderSize)
    return Status::Corruption("control frame truncated: " + std::to_string(frame.size()) +
                              " bytes, the header alone is " + std::to_string(kFrameHeaderSize));
  if (LoadLE<uint32_t>(frame.data()) != kFrameMagic)
    return Status::Corruption("control frame: bad magic");
  return LoadLE<uint16_t>(frame.data() + 4);
}

Result<Message> DecodeFrame(std::span<const std::byte> frame) {
  STRATA_ASSIGN_OR_RETURN(uint16_t version, PeekFrameVersion(frame));
  if (version != kProtocolVersion)
    return Status::NotSupported("protocol version " + std::to_string(version) +
                                " is not supported (this node speaks " +
                                std::to_string(kProtocolVersion) + ")");
  const std::byte* p = frame.data();
  const auto type = static_cast<MessageType>(LoadLE<uint16_t>(p + 6));
  if (MessageTypeName(type) == "unknown")
    return Status::NotSupported("unknown message type " +
                                std::to_string(static_cast<unsigned>(type)));
  const uint32_t length = LoadLE<uint32_t>(p + 8);
  if (length > kMaxControlBody)
    return Status::InvalidArgument("control message body of " + std::to_string(length) +
                                   " bytes exceeds the limit of " +
                                   std::to_string(kMaxControlBody));
  if (frame.size() - kFrameHeaderSize != length)
    return Status::Corruption(std::string(MessageTypeName(type)) + ": frame says " +
                              std::to_string(length) + " body bytes but carries " +
                              std::to_string(frame.size() - kFrameHeaderSize));
  auto body = frame.subspan(kFrameHeaderSize);
  if (static_cast<uint32_t>(PayloadChecksum(body)) != LoadLE<uint32_t>(p + 12))
    return Status::Corruption(std::string(MessageTypeName(type)) + ": body checksum mismatch");
  return DecodeBody(type, body);
}

void EncodeDataHeader(const DataHeader& h, std::span<std::byte, kDataHeaderSize> out) {
  std::byte* p = out.data();
  std::memset(p, 0, kDataHeaderSize);
  StoreLE<uint32_t>(p, kDataMagic);
  StoreLE<uint16_t>(p + 4, kProtocolVersion);
  p[6] = static_cast<std::byte>(h.status);
  StoreLE<uint64_t>(p + 8, h.request_id);
  StoreLE<uint32_t>(p + 16, h.index);
  StoreLE<uint64_t>(p + 24, h.length);
}

Result<DataHeader> DecodeDataHeader(std::span<const std::byte> in) {
  if (in.size() != kDataHeaderSize)
    return Status::Corruption("data header is " + std::to_string(in.size()) + " bytes, not " +
                              std::to_string(kDataHeaderSize));
  const std::byte* p = in.data();
  if (LoadLE<uint32_t>(p) != kDataMagic) return Status::Corruption("data header: bad magic");
  const uint16_t version = LoadLE<uint16_t>(p + 4);
  if (version != kProtocolVersion)
    return Status::NotSupported("data header: protocol version " + std::to_string(version) +
                                " is not supported");
  DataHeader h;
  const auto code = static_cast<uint8_t>(p[6]);
  if (code > static_cast<uint8_t>(StatusCode::kInternal))
    return Status::Corruption("data header: unknown status " + std::to_string(code));
  h.status = static_cast<StatusCode>(code);
  h.request_id = LoadLE<uint64_t>(p + 8);
  h.index = LoadLE<uint32_t>(p + 16);
  h.length = LoadLE<uint64_t>(p + 24);
  if (h.status != StatusCode::kOk && h.length != 0)
    return Status::Corruption("data header: an error status with a block length");
  return h;
}

static_assert(kMultiEntrySize == 8 + 64, "an entry is an index, a length, a block header");

size_t MultiDataHeaderSize(size_t count) { return kMultiHeaderSize + count * kMultiEntrySize; }

void EncodeMultiDataHeader(uint64_t request_id, uint64_t length, uint16_t count,
                           std::span<std::byte> out) {
  std::byte* p = out.data();
  std::memset(p, 0, kMultiHeaderSize);
  StoreLE<uint32_t>(p, kMultiDataMagic);
  StoreLE<uint16_t>(p + 4, kProtocolVersion);
  StoreLE<uint16_t>(p + 6, count);
  StoreLE<uint64_t>(p + 8, request_id);
  StoreLE<uint64_t>(p + 16, length);
}

void EncodeMultiEntry(uint32_t index, uint32_t length, std::span<const std::byte, 64> block_header,
                      std::span<std::byte, kMultiEntrySize> out) {
  std::byte* p = out.data();
  StoreLE<uint32_t>(p, index);
  StoreLE<uint32_t>(p + 4, length);
  std::memcpy(p + 8, block_header.data(), 64);
}

Result<MultiDataHeader> DecodeMultiDataHeader(std::span<const std::byte> in) {
  if (in.size() < kMultiHeaderSize)
    return Status::Corruption("multi-block data header is " + std::to_string(in.size()) +
                              " bytes, shorter than " + std::to_string(kMultiHeaderSize));
  const std::byte* p = in.data();
  if (LoadLE<uint32_t>(p) != kMultiDataMagic)
    return Status::Corruption("multi-block data header: bad magic");
  const uint16_t version = LoadLE<uint16_t>(p + 4);
  if (version != kProtocolVersion)
    return Status::NotSupported("multi-block data header: protocol version " +
                                std::to_string(version) + " is not supported");
  MultiDataHeader h;
  h.count = LoadLE<uint16_t>(p + 6);
  h.request_id = LoadLE<uint64_t>(p + 8);
  h.length = LoadLE<uint64_t>(p + 16);
  if (h.count == 0 || in.size() != MultiDataHeaderSize(h.count))
    return Status::Corruption("multi-block data header: " + std::to_string(h.count) +
                              " entries in " + std::to_string(in.size()) + " bytes");
  h.entries = in.subspan(kMultiHeaderSize);
  return h;
}

uint32_t MultiDataHeader::IndexAt(size_t i) const {
  return LoadLE<uint32_t>(entries.data() + i * kMultiEntrySize);
}

uint32_t MultiDataHeader::LengthAt(size_t i) const {
  return LoadLE<uint32_t>(entries.data() + i * kMultiEntrySize + 4);
}

std::span<const std::byte, 64> MultiDataHeader::BlockHeaderAt(size_t i) const {
  return std::span<const std::byte, 64>(entries.data() + i * kMultiEntrySize + 8, 64);
}

}  // namespace strata::wire
