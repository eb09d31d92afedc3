#include "client/channel.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

namespace strata {

Result<std::unique_ptr<SocketChannel>> SocketChannel::Open(const std::string& socket_path,
                                                           int request_timeout_ms) {
  STRATA_ASSIGN_OR_RETURN(ipc::UnixConnection conn, ipc::UnixConnection::Connect(socket_path));
  if (request_timeout_ms > 0) STRATA_RETURN_IF_ERROR(conn.SetReceiveTimeout(request_timeout_ms));
  std::unique_ptr<SocketChannel> ch(new SocketChannel(std::move(conn)));
  int fd = -1;
  ipc::Hello hello;
  hello.client_name = "strata-client/" + std::to_string(::getpid());
  auto reply = ch->CallLocked(std::move(hello), &fd);
  if (!reply.ok()) {
    if (fd >= 0) ::close(fd);
    return reply.status().WithContext("hello to daemon at '" + socket_path + "'");
  }
  const auto* hr = std::get_if<ipc::HelloReply>(&*reply);
  if (hr == nullptr || fd < 0) {
    if (fd >= 0) ::close(fd);
    return Status::Internal("daemon did not hand over its host pool");
  }
  // MAP_POPULATE fills this process's page tables now, so no store or load takes a page fault
  // later (the daemon already allocated the pages; this only maps them).
  void* base = ::mmap(nullptr, hr->pool_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                      fd, 0);
  ::close(fd);  // the mapping keeps the pool alive
  if (base == MAP_FAILED)
    return Status::IOError(std::string("mapping the daemon's host pool: ") + std::strerror(errno));
  ch->pool_base_ = static_cast<std::byte*>(base);
  ch->pool_bytes_ = hr->pool_bytes;
  return ch;
}

SocketChannel::~SocketChannel() {
  if (pool_base_ != nullptr) ::munmap(pool_base_, pool_bytes_);
}

Result<ipc::ResponseBody> SocketChannel::Call(ipc::RequestBody body) {
  std::lock_guard<std::mutex> lock(mu_);
  return CallLocked(std::move(body), nullptr);
}

Result<ipc::ResponseBody> SocketChannel::CallLocked(ipc::RequestBody body, int* received_fd) {
  ipc::Request request{next_id_++, std::move(body)};
  STRATA_RETURN_IF_ERROR(conn_.Send(ipc::EncodeRequest(request)));
  std::string reply;
  STRATA_RETURN_IF_ERROR(conn_.Receive(&reply, received_fd));
  STRATA_ASSIGN_OR_RETURN(ipc::Response response,
                          ipc::DecodeResponse(std::as_bytes(std::span<const char>(reply))));
  if (!response.status.ok()) return response.status;
  if (response.id != request.id)
    return Status::Internal("daemon answered request " + std::to_string(response.id) +
                            " instead of " + std::to_string(request.id));
  return std::move(response.body);
}

Result<std::unique_ptr<EmbeddedChannel>> EmbeddedChannel::Open(const NodeOptions& options) {
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<Node> node, Node::Open(options));
  return std::unique_ptr<EmbeddedChannel>(new EmbeddedChannel(std::move(node)));
}

EmbeddedChannel::~EmbeddedChannel() {
  node_->ReleaseOwner(kOwner);
  (void)node_->Flush();
}

Result<ipc::ResponseBody> EmbeddedChannel::Call(ipc::RequestBody body) {
  ipc::Request request{next_id_.fetch_add(1), std::move(body)};
  ipc::Response response = handler_.Handle(kOwner, request);
  if (!response.status.ok()) return response.status;
  return std::move(response.body);
}

}  // namespace strata
