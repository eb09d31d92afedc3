// libFuzzer target: the peer wire's control-frame decoder (transport/wire/messages.cc
// DecodeFrame, PeekFrameVersion) must reject any input with a Status, never crash, hang or read
// out of bounds: every byte of it comes from another node before or after the handshake. A
// decoded message re-encodes, and that frame decodes and re-encodes to the same bytes. Built with
// -fsanitize=fuzzer,address,undefined by cmake/StrataFuzz.cmake.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "transport/wire/messages.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace strata::wire;
  auto bytes = std::as_bytes(std::span<const uint8_t>(data, size));
  (void)PeekFrameVersion(bytes);
  auto message = DecodeFrame(bytes);
  if (message.ok()) {
    auto frame = EncodeFrame(*message);
    if (!frame.ok()) std::abort();  // accepted on the wire, refused by our own encoder
    auto again = DecodeFrame(*frame);
    if (!again.ok()) std::abort();
    auto frame2 = EncodeFrame(*again);
    if (!frame2.ok() || *frame2 != *frame) std::abort();
  }
  return 0;
}

#ifdef STRATA_FUZZ_SEED_WRITER
// Writes one valid frame of each message type into the directory argv[1]: the seed corpus.
#include <fstream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  using namespace strata;
  using namespace strata::wire;
  if (argc < 2) return 2;
  const std::vector<BlockKey> keys = {{1, 2}, {3, 4}, {5, 6}};
  const std::vector<std::byte> nonce(kNonceSize, std::byte{7}), mac(kMacSize, std::byte{9});
  const std::vector<std::byte> session(kSessionSize, std::byte{5});
  const std::vector<Message> messages = {
      Hello{kProtocolVersion, "node-a", nonce, {std::byte{1}, std::byte{2}}, 1},
      HelloAck{"node-b", nonce, mac, 1},
      Auth{mac, 2, "node-a"},
      AuthOk{2, session},
      ErrorMessage{3, StatusCode::kNotFound, "no such block"},
      LookupRequest{4, keys, session},
      LookupResponse{4, {{"node-a"}, {"node-a", "node-b"}, {}}},
      Announce{5, "node-a", keys, {keys[0]}, true, session},
      AnnounceAck{5},
      PullRequest{6, NamespaceId{7, 8}, keys, {4160, 4160, 4160}, session},
  };
  int i = 0;
  for (const Message& m : messages) {
    auto frame = EncodeFrame(m);
    if (!frame.ok()) return 1;
    std::ofstream(std::string(argv[1]) + "/frame-" + std::to_string(i++), std::ios::binary)
        .write(reinterpret_cast<const char*>(frame->data()),
               static_cast<std::streamsize>(frame->size()));
  }
  return 0;
}
#endif
