#include "store/disk_record.h"

#include <cstring>

namespace strata::store::disk {

void PutLe(std::byte* p, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) p[i] = static_cast<std::byte>(v >> (8 * i));
}
uint64_t GetLe(const std::byte* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= uint64_t(std::to_integer<uint8_t>(p[i])) << (8 * i);
  return v;
}

size_t TrailerBytes(bool has_parent, std::string_view tag, bool compressed) {
  return (has_parent ? BlockKey::kSize : 0) + (tag.empty() ? 0 : 2 + tag.size()) +
         (compressed ? 5 : 0);
}
void EncodeTrailer(std::byte* p, const BlockKey* parent, std::string_view tag,
                   DiskCompression compression, uint32_t stored) {
  const bool compressed = compression != DiskCompression::kNone;
  p[0] = std::byte{static_cast<uint8_t>((parent ? kHasParent : 0) | (tag.empty() ? 0 : kHasTag) |
                                        (compressed ? kCompressed : 0))};
  size_t at = 1;
  if (parent) {
    parent->ToBytes(std::span<std::byte, BlockKey::kSize>(p + at, BlockKey::kSize));
    at += BlockKey::kSize;
  }
  if (!tag.empty()) {
    p[at] = std::byte{static_cast<uint8_t>(tag.size())};
    p[at + 1] = std::byte{static_cast<uint8_t>(tag.size() >> 8)};
    std::memcpy(p + at + 2, tag.data(), tag.size());
    at += 2 + tag.size();
  }
  if (compressed) {
    p[at] = std::byte{static_cast<uint8_t>(compression)};
    for (int i = 0; i < 4; ++i) p[at + 1 + i] = std::byte{static_cast<uint8_t>(stored >> (8 * i))};
  }
}
size_t DecodeTrailer(const std::byte* p, size_t avail, bool* has_parent, BlockKey* parent,
                     std::string* tag, DiskCompression* compression, uint32_t* stored) {
  if (avail < 1) return 0;
  const uint8_t flags = std::to_integer<uint8_t>(p[0]);
  if (flags & ~(kHasParent | kHasTag | kCompressed)) return 0;
  if ((flags & kCompressed) && compression == nullptr) return 0;
  size_t at = 1;
  *has_parent = flags & kHasParent;
  if (*has_parent) {
    if (avail < at + BlockKey::kSize) return 0;
    *parent = BlockKey::FromBytes(std::span<const std::byte, BlockKey::kSize>(p + at, 16));
    at += BlockKey::kSize;
  }
  tag->clear();
  if (flags & kHasTag) {
    if (avail < at + 2) return 0;
    const size_t t = std::to_integer<size_t>(p[at]) | (std::to_integer<size_t>(p[at + 1]) << 8);
    if (t == 0 || avail < at + 2 + t) return 0;
    tag->assign(reinterpret_cast<const char*>(p + at + 2), t);
    at += 2 + t;
  }
  if (compression != nullptr) {
    *compression = DiskCompression::kNone;
    *stored = 0;
  }
  if (flags & kCompressed) {
    if (avail < at + 5) return 0;
    const uint8_t kind = std::to_integer<uint8_t>(p[at]);
    if (!IsKnownDiskCompression(kind)) return 0;
    uint32_t n = 0;
    for (int i = 0; i < 4; ++i) n |= std::to_integer<uint32_t>(p[at + 1 + i]) << (8 * i);
    if (n == 0) return 0;
    *compression = static_cast<DiskCompression>(kind);
    *stored = n;
    at += 5;
  }
  return at;
}

}  // namespace strata::store::disk
