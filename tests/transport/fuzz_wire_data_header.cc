// libFuzzer target: what a peer's data message puts in front of a block's bytes: the data header
// (transport/wire/messages.cc DecodeDataHeader, the UCX active-message header) and the 64-byte
// block header that starts the block (DecodeBlockHeader, lib/core/block_format.cc). Both come from
// another node: any input gets a Status, never a crash or an out-of-bounds read; a decoded header
// re-encodes and decodes to the same value. Built by cmake/StrataFuzz.cmake.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "strata/block_format.h"
#include "transport/wire/messages.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace strata;
  auto bytes = std::as_bytes(std::span<const uint8_t>(data, size));
  auto header = wire::DecodeDataHeader(bytes);
  if (header.ok()) {
    std::byte out[wire::kDataHeaderSize];
    wire::EncodeDataHeader(*header, out);
    auto again = wire::DecodeDataHeader(out);
    if (!again.ok() || !(*again == *header)) std::abort();
  }
  // A multi-block data message's header: every entry readable within the input.
  auto multi = wire::DecodeMultiDataHeader(bytes);
  if (multi.ok()) {
    if (bytes.size() != wire::MultiDataHeaderSize(multi->count)) std::abort();
    for (size_t e = 0; e < multi->count; ++e) {
      (void)multi->IndexAt(e);
      (void)multi->LengthAt(e);
      (void)DecodeBlockHeader(std::span<const std::byte>(multi->BlockHeaderAt(e)));
    }
  }
  // The block header follows the data header in the same message.
  auto rest = size >= wire::kDataHeaderSize ? bytes.subspan(wire::kDataHeaderSize) : bytes;
  for (auto in : {bytes, rest}) {
    auto block = DecodeBlockHeader(in);
    if (!block.ok()) continue;
    std::byte out[kBlockHeaderSize];
    EncodeBlockHeader(*block, out);
    auto again = DecodeBlockHeader(out);
    if (!again.ok() || !(*again == *block)) std::abort();
  }
  return 0;
}

#ifdef STRATA_FUZZ_SEED_WRITER
// Writes valid data messages' headers into the directory argv[1]: the seed corpus.
#include <fstream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  using namespace strata;
  if (argc < 2) return 2;
  const std::vector<std::byte> payload(100, std::byte{3});
  const BlockHeader block = MakeBlockHeader(BlockKey{1, 2}, NamespaceId{3, 4}, Codec::kNone,
                                            std::span<const std::byte>(payload));
  const wire::DataHeader headers[] = {{StatusCode::kOk, 6, 0, kBlockHeaderSize + payload.size()},
                                      {StatusCode::kNotFound, 6, 2, 0}};
  int i = 0;
  for (const auto& h : headers) {
    std::byte out[wire::kDataHeaderSize + kBlockHeaderSize];
    wire::EncodeDataHeader(h, std::span<std::byte, wire::kDataHeaderSize>(out, wire::kDataHeaderSize));
    EncodeBlockHeader(block, std::span<std::byte, kBlockHeaderSize>(out + wire::kDataHeaderSize,
                                                                     kBlockHeaderSize));
    std::ofstream(std::string(argv[1]) + "/data-" + std::to_string(i++), std::ios::binary)
        .write(reinterpret_cast<const char*>(out), sizeof out);
  }
  return 0;
}
#endif
