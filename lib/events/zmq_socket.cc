#include "events/zmq_socket.h"

#include <cerrno>
#include <utility>

namespace strata::events {
namespace {

Status ZmqError(const std::string& what) {
  const int e = zmq_errno();
  std::string msg = what + ": " + zmq_strerror(e);
  return e == EAGAIN ? Status::Unavailable(msg) : Status::IOError(msg);
}

}  // namespace

Result<ZmqSocket> ZmqSocket::Open(const ZmqContext& ctx, int type) {
  if (ctx.get() == nullptr) return ZmqError("zmq_ctx_new");
  void* s = zmq_socket(ctx.get(), type);
  if (s == nullptr) return ZmqError("zmq_socket");
  ZmqSocket sock(s);
  STRATA_RETURN_IF_ERROR(sock.SetInt(ZMQ_LINGER, 0));
  return sock;
}

Status ZmqSocket::SetInt(int option, int value) {
  if (zmq_setsockopt(s_, option, &value, sizeof(value)) != 0)
    return ZmqError("zmq_setsockopt " + std::to_string(option));
  return Status::OK();
}

Status ZmqSocket::SetBytes(int option, std::string_view value) {
  if (zmq_setsockopt(s_, option, value.data(), value.size()) != 0)
    return ZmqError("zmq_setsockopt " + std::to_string(option));
  return Status::OK();
}

Status ZmqSocket::Bind(const std::string& endpoint) {
  if (zmq_bind(s_, endpoint.c_str()) != 0) return ZmqError("bind '" + endpoint + "'");
  return Status::OK();
}

Status ZmqSocket::Connect(const std::string& endpoint) {
  if (zmq_connect(s_, endpoint.c_str()) != 0) return ZmqError("connect '" + endpoint + "'");
  return Status::OK();
}

Status ZmqSocket::BindOrConnect(const std::string& endpoint) {
  const bool bind = endpoint.find('*') != std::string::npos ||
                    endpoint.find("::") != std::string::npos ||
                    endpoint.rfind("ipc://", 0) == 0 || endpoint.rfind("inproc://", 0) == 0;
  return bind ? Bind(endpoint) : Connect(endpoint);
}

Status ZmqSocket::SendFrames(std::initializer_list<std::string_view> frames, bool dont_wait) {
  size_t i = 0;
  for (std::string_view f : frames) {
    int flags = (++i < frames.size() ? ZMQ_SNDMORE : 0) | (dont_wait ? ZMQ_DONTWAIT : 0);
    if (zmq_send(s_, f.data(), f.size(), flags) < 0) return ZmqError("zmq_send");
  }
  return Status::OK();
}

Result<std::vector<std::string>> ZmqSocket::RecvFrames(bool dont_wait) {
  std::vector<std::string> out;
  for (;;) {
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, s_, dont_wait ? ZMQ_DONTWAIT : 0) < 0) {
      zmq_msg_close(&msg);
      return ZmqError("zmq_msg_recv");
    }
    out.emplace_back(static_cast<const char*>(zmq_msg_data(&msg)), zmq_msg_size(&msg));
    const bool more = zmq_msg_more(&msg) != 0;
    zmq_msg_close(&msg);
    if (!more) return out;
    dont_wait = false;  // the rest of a multipart message is already here
  }
}

bool ZmqSocket::Poll(int timeout_ms) const {
  zmq_pollitem_t item{s_, 0, ZMQ_POLLIN, 0};
  return zmq_poll(&item, 1, timeout_ms) > 0 && (item.revents & ZMQ_POLLIN) != 0;
}

std::string SeqBytes(uint64_t seq) {
  std::string b(8, '\0');
  for (int i = 7; i >= 0; --i, seq >>= 8) b[i] = static_cast<char>(seq & 0xff);
  return b;
}

uint64_t SeqFromBytes(std::string_view b) {
  uint64_t v = 0;
  for (unsigned char c : b) v = v << 8 | c;
  return v;
}

}  // namespace strata::events
