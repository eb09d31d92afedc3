#include "cbor.h"

namespace strata::internal {

void CborWriter::Head(uint8_t major, uint64_t argument) {
  const auto m = static_cast<uint8_t>(major << 5);
  auto put_be = [this](uint64_t v, int bytes) {
    for (int i = bytes - 1; i >= 0; --i) out_.push_back(static_cast<std::byte>(v >> (8 * i)));
  };
  if (argument < 24) {
    out_.push_back(static_cast<std::byte>(m | argument));
  } else if (argument <= 0xff) {
    out_.push_back(static_cast<std::byte>(m | 24));
    put_be(argument, 1);
  } else if (argument <= 0xffff) {
    out_.push_back(static_cast<std::byte>(m | 25));
    put_be(argument, 2);
  } else if (argument <= 0xffffffffu) {
    out_.push_back(static_cast<std::byte>(m | 26));
    put_be(argument, 4);
  } else {
    out_.push_back(static_cast<std::byte>(m | 27));
    put_be(argument, 8);
  }
}

void CborWriter::Int(int64_t v) {
  if (v >= 0)
    Head(0, static_cast<uint64_t>(v));
  else  // -1 - v without overflow at INT64_MIN
    Head(1, ~static_cast<uint64_t>(v));
}

void CborWriter::Bytes(std::span<const std::byte> b) {
  Head(2, b.size());
  out_.insert(out_.end(), b.begin(), b.end());
}

void CborWriter::Text(std::string_view s) {
  Head(3, s.size());
  const auto* p = reinterpret_cast<const std::byte*>(s.data());
  out_.insert(out_.end(), p, p + s.size());
}

}  // namespace strata::internal
