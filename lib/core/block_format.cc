#include "strata/block_format.h"
#include "strata/tier.h"

#include <string>

#include "byte_order.h"
#include "xxh3.h"

namespace strata {
namespace {

constexpr size_t kHeaderChecksumOffset = 56;

}  // namespace

BlockHeader MakeBlockHeader(const BlockKey& key, const NamespaceId& ns, Codec codec,
                            std::span<const std::byte> payload) {
  BlockHeader h;
  h.codec = codec;
  h.payload_length = payload.size();
  h.key = key;
  h.ns = ns;
  h.payload_checksum = PayloadChecksum(payload);
  return h;
}

void EncodeBlockHeader(const BlockHeader& h, std::span<std::byte, kBlockHeaderSize> out) {
  std::byte* p = out.data();
  internal::StoreLE<uint32_t>(p + 0, kBlockMagic);
  internal::StoreLE<uint16_t>(p + 4, h.version);
  internal::StoreLE<uint16_t>(p + 6, static_cast<uint16_t>(h.codec));
  internal::StoreLE<uint64_t>(p + 8, h.payload_length);
  h.key.ToBytes(std::span<std::byte, 16>(p + 16, 16));
  h.ns.ToBytes(std::span<std::byte, 16>(p + 32, 16));
  internal::StoreLE<uint64_t>(p + 48, h.payload_checksum);
  internal::StoreLE<uint64_t>(p + kHeaderChecksumOffset,
                              internal::Xxh3_64(p, kHeaderChecksumOffset));
}

Result<BlockHeader> DecodeBlockHeader(std::span<const std::byte> in) {
  if (in.size() < kBlockHeaderSize)
    return Status::Corruption("block header truncated: " + std::to_string(in.size()) + " of " +
                              std::to_string(kBlockHeaderSize) + " bytes");
  const std::byte* p = in.data();
  if (internal::LoadLE<uint32_t>(p) != kBlockMagic)
    return Status::Corruption("block header: bad magic");
  if (internal::LoadLE<uint64_t>(p + kHeaderChecksumOffset) !=
      internal::Xxh3_64(p, kHeaderChecksumOffset))
    return Status::Corruption("block header: header checksum mismatch");
  BlockHeader h;
  h.version = internal::LoadLE<uint16_t>(p + 4);
  if (h.version != kBlockFormatVersion)
    return Status::NotSupported("block header: format version " + std::to_string(h.version) +
                                " (this build reads " + std::to_string(kBlockFormatVersion) + ")");
  h.codec = static_cast<Codec>(internal::LoadLE<uint16_t>(p + 6));
  if (CodecName(h.codec) == "unknown")
    return Status::Corruption("block header: unknown codec " +
                              std::to_string(static_cast<int>(h.codec)));
  h.payload_length = internal::LoadLE<uint64_t>(p + 8);
  if (h.payload_length > kMaxBlockPayload)
    return Status::Corruption("block header: payload length " + std::to_string(h.payload_length) +
                              " exceeds the maximum");
  h.key = BlockKey::FromBytes(std::span<const std::byte, 16>(p + 16, 16));
  h.ns = BlockKey::FromBytes(std::span<const std::byte, 16>(p + 32, 16));
  h.payload_checksum = internal::LoadLE<uint64_t>(p + 48);
  return h;
}

uint16_t BlockHeaderVersion(std::span<const std::byte> in) {
  if (in.size() < kBlockHeaderSize) return 0;
  const std::byte* p = in.data();
  if (internal::LoadLE<uint32_t>(p) != kBlockMagic ||
      internal::LoadLE<uint64_t>(p + kHeaderChecksumOffset) !=
          internal::Xxh3_64(p, kHeaderChecksumOffset))
    return 0;
  return internal::LoadLE<uint16_t>(p + 4);
}

Status VerifyPayload(const BlockHeader& header, std::span<const std::byte> payload) {
  if (payload.size() != header.payload_length)
    return Status::Corruption("block " + header.key.ToHex() + ": payload is " +
                              std::to_string(payload.size()) + " bytes, header says " +
                              std::to_string(header.payload_length));
  if (PayloadChecksum(payload) != header.payload_checksum)
    return Status::Corruption("block " + header.key.ToHex() + ": payload checksum mismatch");
  return Status::OK();
}

}  // namespace strata

namespace strata {

std::string_view TierName(Tier tier) {
  switch (tier) {
    case Tier::kNone: return "none";
    case Tier::kHost: return "host";
    case Tier::kDisk: return "disk";
    case Tier::kDevice: return "device";
    case Tier::kRemote: return "remote";
  }
  return "unknown";
}

}  // namespace strata
