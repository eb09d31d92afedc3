#include "client/channel.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace strata {

Result<StagingMapping> StagingMapping::Create(uint64_t bytes) {
  if (bytes == 0) return Status::InvalidArgument("staging memory of 0 bytes");
  StagingMapping m;
  m.fd_ = ::memfd_create("strata-client-staging", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (m.fd_ < 0) return Status::IOError(std::string("memfd_create: ") + std::strerror(errno));
  if (::ftruncate(m.fd_, static_cast<off_t>(bytes)) != 0)
    return Status::IOError(std::string("sizing the staging memfd: ") + std::strerror(errno));
  // The daemon maps it and copies out of it: it must never shrink under the daemon's copy.
  if (::fcntl(m.fd_, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
    return Status::IOError(std::string("sealing the staging memfd: ") + std::strerror(errno));
  void* base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, m.fd_, 0);
  if (base == MAP_FAILED)
    return Status::IOError(std::string("mapping the staging memfd: ") + std::strerror(errno));
  m.base_ = static_cast<std::byte*>(base);
  m.bytes_ = bytes;
  return m;
}

StagingMapping& StagingMapping::operator=(StagingMapping&& other) noexcept {
  if (this != &other) {
    this->~StagingMapping();
    fd_ = std::exchange(other.fd_, -1);
    base_ = std::exchange(other.base_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

StagingMapping::~StagingMapping() {
  if (base_ != nullptr) ::munmap(base_, bytes_);
  if (fd_ >= 0) ::close(fd_);
  base_ = nullptr;
  fd_ = -1;
}

namespace {

// 2 MiB, the huge page size of x86-64 and of the daemon's hugetlbfs pool.
constexpr uint64_t kHugePageBytes = uint64_t{2} << 20;

}  // namespace

Result<void*> ReservePoolAddressSpace(uint64_t bytes) {
  // Reserved 2 MiB larger, then trimmed to a 2 MiB-aligned range: slabs are multiples of 2 MiB,
  // so every slab mapped at its place starts on a huge-page boundary (a hugetlbfs slab cannot be
  // mapped anywhere else: mmap fails with EINVAL; a huge shmem page is mapped by one page-table
  // entry only there).
  void* m = ::mmap(nullptr, bytes + kHugePageBytes, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED)
    return Status::IOError(std::string("reserving address space for the daemon's host pool: ") +
                           std::strerror(errno));
  auto* reservation = static_cast<std::byte*>(m);
  const uint64_t head =
      (kHugePageBytes - reinterpret_cast<uintptr_t>(reservation) % kHugePageBytes) %
      kHugePageBytes;
  if (head > 0) ::munmap(reservation, head);
  ::munmap(reservation + head + bytes, kHugePageBytes - head);
  return static_cast<void*>(reservation + head);
}

Result<std::unique_ptr<SocketChannel>> SocketChannel::Open(
    const std::string& socket_path, int request_timeout_ms, uint64_t staging_bytes,
    std::span<const uint32_t> trusted_daemon_uids, CrossMemory cross_memory) {
  // A socket that another user created (e.g. pre-created in a shared /tmp) would capture every
  // block this client stores: refuse it before saying anything.
  STRATA_ASSIGN_OR_RETURN(std::vector<uid_t> trusted, ipc::TrustedDaemonUids(trusted_daemon_uids));
  STRATA_RETURN_IF_ERROR(ipc::CheckDaemonSocketOwner(socket_path, trusted));
  STRATA_ASSIGN_OR_RETURN(ipc::UnixConnection conn, ipc::UnixConnection::Connect(socket_path));
  if (request_timeout_ms > 0) STRATA_RETURN_IF_ERROR(conn.SetReceiveTimeout(request_timeout_ms));
  std::unique_ptr<SocketChannel> ch(new SocketChannel(std::move(conn)));
  STRATA_ASSIGN_OR_RETURN(ch->staging_, StagingMapping::Create(staging_bytes));
  int fd = -1;
  ipc::Hello hello;
  hello.client_name = "strata-client/" + std::to_string(::getpid());
  hello.staging_bytes = staging_bytes;
  // Cross-memory stores: where Yama restricts ptrace to ancestors, let the daemon's pid (the
  // socket's peer) read this process (PR_SET_PTRACER; no effect without Yama). The probe is the
  // Hello's own client name: any 64 readable bytes of this process will do.
  static const char kProbe[64] = "strata cross-memory probe";
  if (cross_memory != CrossMemory::kOff) {
    const pid_t daemon_pid = ch->conn_.PeerPid();
    if (daemon_pid > 0) (void)::prctl(PR_SET_PTRACER, static_cast<unsigned long>(daemon_pid));
    hello.cross_memory_probe = reinterpret_cast<uint64_t>(kProbe);
  }
  auto reply = ch->CallLocked(std::move(hello), ch->staging_.fd(), &fd);
  if (fd >= 0) ::close(fd);  // nothing comes with a HelloReply
  if (!reply.ok()) return reply.status().WithContext("hello to daemon at '" + socket_path + "'");
  const auto* hr = std::get_if<ipc::HelloReply>(&*reply);
  if (hr == nullptr || hr->slab_bytes == 0 || hr->pool_bytes % hr->slab_bytes != 0)
    return Status::Internal("daemon did not describe its host pool");
  // Address space only: a slab is mapped over its place when a load first reads from it.
  STRATA_ASSIGN_OR_RETURN(void* base, ReservePoolAddressSpace(hr->pool_bytes));
  ch->cross_memory_ = hr->cross_memory && cross_memory != CrossMemory::kOff;
  ch->verify_loads_ = hr->verify_loads;
  if (cross_memory == CrossMemory::kRequired && !ch->cross_memory_) {
    ::munmap(base, hr->pool_bytes);
    return Status::PermissionDenied(
        "the daemon at '" + socket_path +
        "' cannot read this process's memory (cross-memory stores asked for by "
        "STRATA_STORE_PATH=cross_memory or ClientOptions::store_path)");
  }
  ch->pool_base_ = static_cast<const std::byte*>(base);
  ch->pool_bytes_ = hr->pool_bytes;
  ch->slab_bytes_ = hr->slab_bytes;
  const uint64_t slabs = hr->pool_bytes / hr->slab_bytes;
  ch->mapped_.reset(new std::atomic<uint32_t>[slabs]);
  for (uint64_t i = 0; i < slabs; ++i) ch->mapped_[i].store(kUnmapped, std::memory_order_relaxed);
  return ch;
}

Status SocketChannel::MapForRead(std::span<const ipc::Location> locations) {
  for (const ipc::Location& loc : locations) {
    const uint64_t slab = loc.offset / slab_bytes_;
    if (slab >= pool_bytes_ / slab_bytes_ || loc.length > slab_bytes_ ||
        loc.offset + loc.length > (slab + 1) * slab_bytes_)
      return Status::Internal("daemon returned a location outside its pool's slabs");
    if (mapped_[slab].load(std::memory_order_acquire) == loc.generation) continue;
    std::lock_guard<std::mutex> lock(mu_);
    if (mapped_[slab].load(std::memory_order_relaxed) == loc.generation) continue;
    STRATA_RETURN_IF_ERROR(MapSlabLocked(slab, 0));
  }
  return Status::OK();
}

Status SocketChannel::MapPool(bool fill) {
  std::lock_guard<std::mutex> lock(mu_);
  for (uint64_t slab = 0; slab < pool_bytes_ / slab_bytes_; ++slab) {
    Status st = MapSlabLocked(slab, fill ? MAP_POPULATE : 0);
    // Another tenant's slab: not this client's to read (a load never names it).
    if (!st.ok() && st.code() != StatusCode::kPermissionDenied) return st;
  }
  return Status::OK();
}

void SocketChannel::FillPoolInBackground() {
  static_assert(PoolFiller::kUnmapped == kUnmapped);
  filler_ = std::make_unique<PoolFiller>(
      pool_base_, slab_bytes_, pool_bytes_ / slab_bytes_,
      [this](uint64_t slab) { return mapped_[slab].load(std::memory_order_acquire); });
}

Status SocketChannel::MapSlabLocked(uint64_t slab, int extra_flags) {
  int fd = -1;
  auto reply = CallLocked(ipc::MapSlabRequest{static_cast<uint32_t>(slab)}, -1, &fd);
  struct CloseFd {
    int fd;
    ~CloseFd() {
      if (fd >= 0) ::close(fd);
    }
  } close_fd{fd};  // the mapping keeps the memory
  if (!reply.ok()) return reply.status().WithContext("mapping pool slab " + std::to_string(slab));
  const auto* mr = std::get_if<ipc::MapSlabReply>(&*reply);
  if (mr == nullptr || fd < 0) return Status::Internal("daemon did not hand over a pool slab");
  // Over the old mapping (PROT_NONE or an older generation) at the slab's place; whoever
  // registered the old one lets go of it first.
  if (remap_hook_ && mapped_[slab].load(std::memory_order_relaxed) != kUnmapped) remap_hook_(slab);
  auto* at = const_cast<std::byte*>(pool_base_) + slab * slab_bytes_;
  if (::mmap(at, slab_bytes_, PROT_READ, MAP_SHARED | MAP_FIXED | extra_flags, fd, 0) ==
      MAP_FAILED)
    return Status::IOError(std::string("mapping pool slab ") + std::to_string(slab) + ": " +
                           std::strerror(errno));
  mapped_[slab].store(mr->generation, std::memory_order_release);
  return Status::OK();
}

SocketChannel::~SocketChannel() {
  filler_.reset();  // it reads the pool's mapping
  // Posted requests (a load's Unpin) are answered before this client goes, so that whatever the
  // process does next (another connection's Stats, a test's check) sees their effect; a daemon
  // that does not answer within a second is left to release them with the session.
  {
    std::lock_guard<std::mutex> lock(mu_);
    ipc::ReceiveLimits limits;
    limits.idle_timeout_ms = 1000;
    limits.message_timeout_ms = 1000;
    std::string reply;
    for (; unanswered_ > 0 && conn_.fd() >= 0; --unanswered_) {
      int fd = -1;
      if (!conn_.Receive(&reply, &fd, limits).ok()) break;
      if (fd >= 0) ::close(fd);
    }
  }
  if (pool_base_ != nullptr) ::munmap(const_cast<std::byte*>(pool_base_), pool_bytes_);
  for (auto& [tenant, m] : indexes_) ::munmap(const_cast<std::byte*>(m.base), m.bytes);
}

Status SocketChannel::Notify(ipc::RequestBody body) {
  std::lock_guard<std::mutex> lock(mu_);
  if (conn_.fd() < 0)
    return Status::Unavailable("the connection to the daemon was closed after a broken reply");
  ipc::Request request{next_id_++, std::move(body)};
  return conn_.Send(ipc::EncodeRequest(request), -1);  // no response comes
}

Result<const store::LoadIndexView*> SocketChannel::MapLoadIndex(const NamespaceId& ns) {
  std::lock_guard<std::mutex> lock(mu_);
  int fd = -1;
  auto reply = CallLocked(ipc::MapLoadIndexRequest{ns}, -1, &fd);
  struct CloseFd {
    int fd;
    ~CloseFd() {
      if (fd >= 0) ::close(fd);
    }
  } close_fd{fd};  // the mapping keeps the memory
  if (!reply.ok()) return reply.status().WithContext("mapping the load index");
  const auto* mr = std::get_if<ipc::MapLoadIndexReply>(&*reply);
  if (mr == nullptr || fd < 0) return Status::Internal("daemon did not hand over a load index");
  if (auto it = indexes_.find(mr->tenant); it != indexes_.end()) return &it->second.view;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_size <= 0)
    return Status::IOError(std::string("load index descriptor: ") + std::strerror(errno));
  const uint64_t bytes = static_cast<uint64_t>(st.st_size);  // the memfd's own size, sealed
  void* base = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED)
    return Status::IOError(std::string("mapping the load index: ") + std::strerror(errno));
  auto view = store::LoadIndexView::Attach(static_cast<const std::byte*>(base), bytes);
  if (!view.ok()) {
    ::munmap(base, bytes);
    return view.status();
  }
  IndexMapping& m = indexes_[mr->tenant];
  m.base = static_cast<const std::byte*>(base);
  m.bytes = bytes;
  m.view = *view;
  return &m.view;
}

Result<uint64_t> SocketChannel::ShareKv(int fd, ipc::ShareKvRequest request) {
  std::lock_guard<std::mutex> lock(mu_);
  auto reply = CallLocked(std::move(request), fd, nullptr);
  if (!reply.ok()) return reply.status().WithContext("sharing a KV cache with the daemon");
  const auto* r = std::get_if<ipc::ShareKvReply>(&*reply);
  if (r == nullptr) return Status::Internal("daemon did not answer ShareKv with a share id");
  return r->id;
}

Result<ipc::ResponseBody> SocketChannel::Call(ipc::RequestBody body) {
  std::lock_guard<std::mutex> lock(mu_);
  return CallLocked(std::move(body), -1, nullptr);
}

Status SocketChannel::Post(ipc::RequestBody body) {
  std::lock_guard<std::mutex> lock(mu_);
  if (conn_.fd() < 0)
    return Status::Unavailable("the connection to the daemon was closed after a broken reply");
  ipc::Request request{next_id_++, std::move(body)};
  STRATA_RETURN_IF_ERROR(conn_.Send(ipc::EncodeRequest(request), -1));
  ++unanswered_;  // its response is read and dropped by the next call, as a timed-out call's
  return Status::OK();
}

// The daemon answers a session's requests in order, one response each. A call that timed out, or
// a Post, leaves its response to come; the next call reads it first and discards it (its id is
// smaller), at most `unanswered_` of them, then reads its own. A stream that cannot be
// resynchronised (a timeout inside a message, an id from the future) is closed: every later call
// is Unavailable.
Result<ipc::ResponseBody> SocketChannel::CallLocked(ipc::RequestBody body, int pass_fd,
                                                    int* received_fd) {
  if (conn_.fd() < 0)
    return Status::Unavailable("the connection to the daemon was closed after a broken reply");
  ipc::Request request{next_id_++, std::move(body)};
  STRATA_RETURN_IF_ERROR(conn_.Send(ipc::EncodeRequest(request), pass_fd));
  ++unanswered_;
  std::string reply;
  for (;;) {
    int fd = -1;
    Status st = conn_.Receive(&reply, received_fd != nullptr ? &fd : nullptr);
    if (st.IsTimedOut())
      return st.WithContext("request " + std::to_string(request.id) +
                            " (its late response will be skipped)");
    if (!st.ok()) {
      // A partly read message, a length over the limit, a closed socket: the framing is lost.
      conn_ = ipc::UnixConnection(-1);
      return st;
    }
    auto response = ipc::DecodeResponse(std::as_bytes(std::span<const char>(reply)));
    const bool stale =
        response.ok() && response->id < request.id && unanswered_ > 1;  // a timed-out call's
    if (!response.ok() || (response->id != request.id && !stale)) {
      if (fd >= 0) ::close(fd);
      conn_ = ipc::UnixConnection(-1);
      if (!response.ok()) return response.status();
      return Status::Internal("daemon answered request " + std::to_string(response->id) +
                              " instead of " + std::to_string(request.id));
    }
    --unanswered_;
    if (stale) {
      if (fd >= 0) ::close(fd);
      continue;
    }
    if (received_fd != nullptr) *received_fd = fd;
    if (!response->status.ok()) return response->status;
    return std::move(response->body);
  }
}

Result<std::unique_ptr<EmbeddedChannel>> EmbeddedChannel::Open(const NodeOptions& options,
                                                               uint64_t staging_bytes,
                                                               bool verify_loads) {
  STRATA_ASSIGN_OR_RETURN(StagingMapping staging, StagingMapping::Create(staging_bytes));
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<Node> node, Node::Open(options));
  return std::unique_ptr<EmbeddedChannel>(
      new EmbeddedChannel(std::move(node), std::move(staging), verify_loads));
}

EmbeddedChannel::~EmbeddedChannel() {
  node_->ReleaseOwner(kOwner);
  (void)node_->Flush();
}

Result<ipc::ResponseBody> EmbeddedChannel::Call(ipc::RequestBody body) {
  ipc::Request request{next_id_.fetch_add(1), std::move(body)};
  // The embedded client's own process owns the node: it is an admin.
  Caller caller{.admin = true, .staging = {staging_.base(), staging_.bytes()}, .tenants = {}};
  ipc::Response response = handler_.Handle(kOwner, request, caller);
  if (!response.status.ok()) return response.status;
  return std::move(response.body);
}

}  // namespace strata
