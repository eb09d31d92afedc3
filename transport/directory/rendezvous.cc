#include "transport/directory/rendezvous.h"

#include <array>
#include <cstring>

#include "strata/block_format.h"

namespace strata::transport {

uint64_t RendezvousScore(const BlockKey& key, std::string_view member_id) {
  // Small ids fit a stack buffer; longer ones are rare and hashed from a heap copy.
  std::array<std::byte, 16 + 112> buf;
  key.ToBytes(std::span<std::byte, 16>(buf.data(), 16));
  if (member_id.size() <= buf.size() - 16) {
    std::memcpy(buf.data() + 16, member_id.data(), member_id.size());
    return PayloadChecksum(std::span<const std::byte>(buf.data(), 16 + member_id.size()));
  }
  std::vector<std::byte> big(16 + member_id.size());
  std::memcpy(big.data(), buf.data(), 16);
  std::memcpy(big.data() + 16, member_id.data(), member_id.size());
  return PayloadChecksum(big);
}

std::string RendezvousOwner(const BlockKey& key, const std::vector<std::string>& member_ids) {
  const std::string* best = nullptr;
  uint64_t best_score = 0;
  for (const std::string& id : member_ids) {
    const uint64_t s = RendezvousScore(key, id);
    if (best == nullptr || s > best_score || (s == best_score && id < *best)) {
      best = &id;
      best_score = s;
    }
  }
  return best ? *best : std::string();
}

}  // namespace strata::transport
