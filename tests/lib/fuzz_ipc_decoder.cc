// libFuzzer target: the engine <-> daemon message decoders must reject any input with a Status,
// never crash, hang or read out of bounds (built with -fsanitize=fuzzer,address,undefined by
// cmake/StrataFuzz.cmake). A decoded request re-encodes and decodes to the same bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "ipc/ipc_protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto bytes = std::as_bytes(std::span<const uint8_t>(data, size));
  auto request = strata::ipc::DecodeRequest(bytes);
  if (request.ok()) {
    std::string again = strata::ipc::EncodeRequest(*request);
    auto round = strata::ipc::DecodeRequest(std::as_bytes(std::span<const char>(again)));
    if (!round.ok() || strata::ipc::EncodeRequest(*round) != again) std::abort();
  }
  auto response = strata::ipc::DecodeResponse(bytes);
  if (response.ok()) (void)strata::ipc::EncodeResponse(*response);
  return 0;
}

#ifdef STRATA_FUZZ_SEED_WRITER
// Writes one valid message of each kind into the directory argv[1]: the fuzzer's seed corpus.
#include <fstream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  using namespace strata;
  using namespace strata::ipc;
  if (argc < 2) return 2;
  const std::vector<BlockKey> keys = {{1, 2}, {3, 4}, {5, 6}};
  const std::vector<Request> requests = {
      {1, Hello{kIpcProtocolVersion, "seed"}},
      {2, LookupRequest{.keys = keys, .ns = std::nullopt}},
      {3, StoreBeginRequest{.ns = NamespaceId{7, 8}, .keys = keys, .sizes = {}}},
      {4, StoreCommitRequest{NamespaceId{7, 8}, Codec::kShuffleZstd, keys, keys, {0, 64, 128},
                             {64, 64, 64}}},
      {5, LoadRequest{NamespaceId{7, 8}, keys, 1000}},
      {6, UnpinRequest{keys}},
      {7, PrefetchRequest{keys}},
      {8, StatsRequest{}},
      {9, ClearRequest{NamespaceId{7, 8}}},
  };
  int i = 0;
  for (const auto& r : requests)
    std::ofstream(std::string(argv[1]) + "/request-" + std::to_string(i++), std::ios::binary)
        << EncodeRequest(r);
  const std::vector<Response> responses = {
      {1, Status::OK(), HelloReply{1, 1 << 20, "0.1.0"}},
      {2, Status::OK(), LookupReply{2, {Tier::kHost, Tier::kDisk}}},
      {3, Status::OK(), StoreBeginReply{{0, 1}}},
      {4, Status::OK(), StoreCommitReply{3, 1}},
      {5, Status::OK(), LoadReply{{{4096, 64, 12345, Codec::kNone}}}},
      {6, Status::NoSpace("full"), {}},
  };
  for (const auto& r : responses)
    std::ofstream(std::string(argv[1]) + "/response-" + std::to_string(i++), std::ios::binary)
        << EncodeResponse(r);
  return 0;
}
#endif
