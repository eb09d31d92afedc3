// How a Client reaches its cache: over the daemon's Unix socket (SocketChannel) or in-process
// (EmbeddedChannel, which owns a Node and calls the same RequestHandler the daemon uses).
//
// Thread-safety: Call may be used from many threads; SocketChannel serialises them on its socket.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "daemon/request_handler.h"
#include "ipc/ipc_protocol.h"
#include "ipc/unix_socket.h"
#include "node/node.h"

namespace strata {

class Channel {
 public:
  virtual ~Channel() = default;
  // Sends `body` as a request and returns the response body, or the status of a failed request.
  virtual Result<ipc::ResponseBody> Call(ipc::RequestBody body) = 0;
  // The host pool, mapped into this process.
  virtual std::byte* pool_base() const = 0;
  virtual uint64_t pool_bytes() const = 0;
};

class SocketChannel final : public Channel {
 public:
  // Connects, says Hello, receives and maps the pool descriptor.
  static Result<std::unique_ptr<SocketChannel>> Open(const std::string& socket_path,
                                                     int request_timeout_ms);
  ~SocketChannel() override;
  Result<ipc::ResponseBody> Call(ipc::RequestBody body) override;
  std::byte* pool_base() const override { return pool_base_; }
  uint64_t pool_bytes() const override { return pool_bytes_; }

 private:
  explicit SocketChannel(ipc::UnixConnection conn) : conn_(std::move(conn)) {}
  Result<ipc::ResponseBody> CallLocked(ipc::RequestBody body, int* received_fd);

  std::mutex mu_;
  ipc::UnixConnection conn_;  // GUARDED_BY(mu_)
  uint64_t next_id_ = 1;      // GUARDED_BY(mu_)
  std::byte* pool_base_ = nullptr;
  uint64_t pool_bytes_ = 0;
};

class EmbeddedChannel final : public Channel {
 public:
  static Result<std::unique_ptr<EmbeddedChannel>> Open(const NodeOptions& options);
  ~EmbeddedChannel() override;
  Result<ipc::ResponseBody> Call(ipc::RequestBody body) override;
  std::byte* pool_base() const override { return node_->pool_base(); }
  uint64_t pool_bytes() const override { return node_->pool_bytes(); }

 private:
  static constexpr Node::OwnerId kOwner = 1;
  explicit EmbeddedChannel(std::unique_ptr<Node> node)
      : node_(std::move(node)), handler_(node_.get()) {}
  std::unique_ptr<Node> node_;
  RequestHandler handler_;
  std::atomic<uint64_t> next_id_{1};
};

}  // namespace strata
