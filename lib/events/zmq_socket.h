// Private to lib/events: RAII over libzmq's C API (context, socket, multipart frames), with
// Status errors instead of cppzmq's exceptions. libzmq stays inside lib/events.
//
// Thread-safety: a ZmqContext may be shared; a ZmqSocket is used by one thread at a time.
#pragma once

#include <zmq.h>

#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "strata/result.h"
#include "strata/status.h"

namespace strata::events {

class ZmqContext {
 public:
  ZmqContext() : ctx_(zmq_ctx_new()) {}
  ~ZmqContext() {
    if (ctx_ != nullptr) zmq_ctx_term(ctx_);
  }
  ZmqContext(const ZmqContext&) = delete;
  ZmqContext& operator=(const ZmqContext&) = delete;
  void* get() const { return ctx_; }

 private:
  void* ctx_;
};

class ZmqSocket {
 public:
  ZmqSocket() = default;
  ~ZmqSocket() { Close(); }
  ZmqSocket(ZmqSocket&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  ZmqSocket& operator=(ZmqSocket&& o) noexcept {
    if (this != &o) {
      Close();
      s_ = std::exchange(o.s_, nullptr);
    }
    return *this;
  }

  // A socket of `type` (ZMQ_PUB, ...) with linger 0, so that closing never waits for a peer.
  static Result<ZmqSocket> Open(const ZmqContext& ctx, int type);

  bool valid() const { return s_ != nullptr; }
  void* get() const { return s_; }
  void Close() {
    if (s_ != nullptr) zmq_close(s_);
    s_ = nullptr;
  }

  Status SetInt(int option, int value);
  Status SetBytes(int option, std::string_view value);
  Status Bind(const std::string& endpoint);
  Status Connect(const std::string& endpoint);
  // vLLM's rule: bind when the endpoint contains '*' or '::' or is ipc:// or inproc://, else
  // connect.
  Status BindOrConnect(const std::string& endpoint);

  // Sends `frames` as one multipart message. With dont_wait, Unavailable when ZMQ would block
  // (a PUB socket at its high-water mark drops instead, and reports OK).
  Status SendFrames(std::initializer_list<std::string_view> frames, bool dont_wait);
  // Receives one multipart message. With dont_wait, Unavailable when none is waiting.
  Result<std::vector<std::string>> RecvFrames(bool dont_wait);
  // Whether a message is waiting within `timeout_ms` (-1: forever).
  bool Poll(int timeout_ms) const;

 private:
  explicit ZmqSocket(void* s) : s_(s) {}
  void* s_ = nullptr;
};

// A sequence number as vLLM sends it: 8 bytes, big-endian. -1 (all ones) ends a replay.
std::string SeqBytes(uint64_t seq);
uint64_t SeqFromBytes(std::string_view b);
inline constexpr uint64_t kEndOfReplay = ~uint64_t{0};

}  // namespace strata::events
