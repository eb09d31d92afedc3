#include "transport/ucx/ucx_engine.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <future>
#include <mutex>
#include <thread>
#include <unordered_map>

#include <ucp/api/ucp.h>

namespace strata::transport {
namespace {

Status FromUcs(ucs_status_t s, std::string_view what) {
  std::string msg = std::string(what) + ": " + ucs_status_string(s);
  switch (s) {
    case UCS_OK: return Status::OK();
    case UCS_ERR_CANCELED: return Status::Aborted(msg);
    case UCS_ERR_TIMED_OUT:
    case UCS_ERR_ENDPOINT_TIMEOUT: return Status::TimedOut(msg);
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_REJECTED: return Status::Unavailable(msg);
    case UCS_ERR_NO_MEMORY:
    case UCS_ERR_NO_RESOURCE: return Status::ResourceExhausted(msg);
    case UCS_ERR_INVALID_PARAM: return Status::InvalidArgument(msg);
    case UCS_ERR_UNSUPPORTED: return Status::NotSupported(msg);
    default: return Status::IOError(msg);
  }
}

}  // namespace

struct UcxEngine::Impl {
  struct Conn {
    ConnId id = 0;
    ucp_ep_h ep = nullptr;
    bool own = false;  // created by Connect(); else a peer's reply connection
  };
  // One in-flight operation; freed by its completion callback.
  struct Op {
    Impl* impl = nullptr;
    ConnId conn = 0;
    uint64_t cookie = 0;
    bool is_recv = false;
    bool control_recv = false;
    std::vector<std::byte> buffer;  // control message bytes (send or large receive)
    std::byte header[128];  // a DataHeader, and the block header of a split block
    std::vector<std::byte> long_header;  // a header longer than `header` (several blocks)
    std::vector<ucp_dt_iov_t> iov;        // a message in pieces (send or receive)
    std::function<void(const Status&)> done;
  };

  UcxEngineOptions options;
  ucp_context_h context = nullptr;
  ucp_worker_h worker = nullptr;
  // One per MemoryRegion; the vector is fixed at Open, the handles change (ReregisterUnit).
  struct Registered {
    std::byte* base = nullptr;
    size_t size = 0;
    size_t unit = 0;
    size_t units = 0;
    std::unique_ptr<std::atomic<ucp_mem_h>[]> memhs;  // null: unit not registered now
  };
  std::vector<Registered> registered;
  std::mutex register_mu;  // one ReregisterUnit at a time
  std::atomic<uint64_t> reregistered{0};
  std::vector<std::byte> address;
  size_t max_am_header = 0;
  std::string tls;
  std::string net_device;
  int epoll_fd = -1;
  int wake_fd = -1;
  int worker_fd = -1;
  std::thread thread;
  std::thread::id thread_id;
  std::atomic<bool> stop{false};

  std::mutex mu;
  std::vector<std::function<void()>> tasks;  // GUARDED_BY(mu)

  // Progress-thread state.
  ConnId next_conn = 1;
  std::unordered_map<ConnId, Conn> conns;
  std::unordered_map<ucp_ep_h, ConnId> by_ep;
  std::unordered_map<Op*, ucs_status_ptr_t> inflight;  // op -> UCX request, for shutdown
  std::vector<ucs_status_ptr_t> closing;  // endpoint close requests not complete yet
  std::atomic<uint64_t> flushing_closes{0};

  ~Impl() {
    for (Registered& r : registered)
      for (size_t i = 0; i < r.units; ++i)
        if (ucp_mem_h m = r.memhs[i].load(std::memory_order_acquire)) ucp_mem_unmap(context, m);
    if (worker) ucp_worker_destroy(worker);
    if (context) ucp_cleanup(context);
    if (epoll_fd >= 0) ::close(epoll_fd);
    if (wake_fd >= 0) ::close(wake_fd);
  }

  // The handle of the unit that holds [p, p + n), or null (outside every region, across a unit
  // boundary, or a unit being registered again): UCX then registers the buffer itself.
  ucp_mem_h MemhFor(const void* p, size_t n) const {
    const auto* q = static_cast<const std::byte*>(p);
    for (const Registered& r : registered) {
      if (q < r.base || q >= r.base + r.size) continue;
      const size_t i = static_cast<size_t>(q - r.base) / r.unit;
      const std::byte* end = r.base + std::min(r.size, (i + 1) * r.unit);
      return q + n <= end ? r.memhs[i].load(std::memory_order_acquire) : nullptr;
    }
    return nullptr;
  }

  Result<ucp_mem_h> Map(std::byte* base, size_t length) {
    ucp_mem_map_params_t mp{};
    mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
    mp.address = base;
    mp.length = length;
    ucp_mem_h memh = nullptr;
    const ucs_status_t s = ucp_mem_map(context, &mp, &memh);
    if (s != UCS_OK) return FromUcs(s, "ucp_mem_map");
    return memh;
  }

  void Enqueue(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> lock(mu);
      tasks.push_back(std::move(fn));
    }
    uint64_t one = 1;
    [[maybe_unused]] ssize_t r = ::write(wake_fd, &one, sizeof(one));
  }

  void RunTasks() {
    std::vector<std::function<void()>> run;
    {
      std::lock_guard<std::mutex> lock(mu);
      run.swap(tasks);
    }
    for (auto& fn : run) fn();
  }

  ConnId ConnOf(ucp_ep_h ep) {
    if (ep == nullptr) return 0;
    auto it = by_ep.find(ep);
    if (it != by_ep.end()) return it->second;
    const ConnId id = next_conn++;
    conns[id] = Conn{id, ep, false};
    by_ep[ep] = id;
    return id;
  }

  // Forgets `conn` and reports `status` for it.
  void FailConn(ConnId id, const Status& status, bool close_ep) {
    auto it = conns.find(id);
    if (it == conns.end()) return;
    Conn c = it->second;
    conns.erase(it);
    by_ep.erase(c.ep);
    if (close_ep && c.own) CloseEp(c.ep, true);
    if (options.handlers.on_conn_error) options.handlers.on_conn_error(id, status);
  }

  void CloseEp(ucp_ep_h ep, bool force) {
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = force ? UCP_EP_CLOSE_FLAG_FORCE : 0;
    ucs_status_ptr_t r = ucp_ep_close_nbx(ep, &p);
    if (force && UCS_PTR_STATUS(r) == UCS_ERR_INVALID_PARAM) {
      // UCX refuses a forced close of an endpoint without peer error handling (a data
      // endpoint) and closes nothing: it stayed connected, receiving, until the worker went.
      // Such an endpoint is closed by flushing it: done at once when its peer is gone (the
      // failed lanes have nothing to flush), else once what it has in flight completes.
      flushing_closes.fetch_add(1, std::memory_order_relaxed);
      p.flags = 0;
      r = ucp_ep_close_nbx(ep, &p);
    }
    if (UCS_PTR_IS_PTR(r)) closing.push_back(r);  // freed by ReapCloses once complete
  }

  // Frees the close requests that completed; the rest are checked again on the next tick (a
  // flush to a stalled peer can take until its sockets time out).
  void ReapCloses() {
    std::erase_if(closing, [](ucs_status_ptr_t r) {
      if (ucp_request_check_status(r) == UCS_INPROGRESS) return false;
      ucp_request_free(r);
      return true;
    });
  }

  void Post(std::function<void()> fn) {  // from the progress thread: run on the next round
    std::lock_guard<std::mutex> lock(mu);
    tasks.push_back(std::move(fn));
  }

  static void EpError(void* arg, ucp_ep_h ep, ucs_status_t status) {
    auto* impl = static_cast<Impl*>(arg);
    auto it = impl->by_ep.find(ep);
    if (it == impl->by_ep.end()) return;
    impl->FailConn(it->second, FromUcs(status, "peer connection failed"), /*close_ep=*/true);
  }

  static void SendDone(void* request, ucs_status_t status, void* user_data) {
    auto* op = static_cast<Op*>(user_data);
    op->impl->inflight.erase(op);
    op->impl->Complete(op, FromUcs(status, "send"));
    ucp_request_free(request);
  }

  static void RecvDone(void* request, ucs_status_t status, size_t length, void* user_data) {
    auto* op = static_cast<Op*>(user_data);
    op->impl->inflight.erase(op);
    op->impl->Complete(op, FromUcs(status, "receive"));
    ucp_request_free(request);
  }

  void Complete(Op* op, const Status& st) {
    if (op->is_recv) {
      if (op->control_recv) {
        if (st.ok() && options.handlers.on_control) options.handlers.on_control(op->conn, op->buffer);
      } else if (options.handlers.on_data_done) {
        options.handlers.on_data_done(op->conn, op->cookie, st);
      }
    } else if (op->done) {
      op->done(st);
    }
    delete op;
  }

  // Tracks or completes an operation according to what UCX returned.
  void Track(Op* op, ucs_status_ptr_t r, std::string_view what) {
    if (r == nullptr) {
      Complete(op, Status::OK());
    } else if (UCS_PTR_IS_ERR(r)) {
      Complete(op, FromUcs(UCS_PTR_STATUS(r), what));
    } else {
      inflight[op] = r;
    }
  }

  static ucs_status_t AmControl(void* arg, const void* header, size_t header_length, void* data,
                                size_t length, const ucp_am_recv_param_t* param) {
    auto* impl = static_cast<Impl*>(arg);
    const ConnId conn = (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP)
                            ? impl->ConnOf(param->reply_ep)
                            : 0;
    if (length > impl->options.max_control_bytes) {
      return (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) ? UCS_ERR_MESSAGE_TRUNCATED : UCS_OK;
    }
    if (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) {
      // A large control message: receive it into a buffer of its own first.
      auto* op = new Op;
      op->impl = impl;
      op->conn = conn;
      op->is_recv = true;
      op->control_recv = true;
      op->buffer.resize(length);
      ucp_request_param_t p{};
      p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
      p.cb.recv_am = RecvDone;
      p.user_data = op;
      impl->Track(op, ucp_am_recv_data_nbx(impl->worker, data, op->buffer.data(), length, &p),
                  "control receive");
      return UCS_OK;
    }
    if (impl->options.handlers.on_control)
      impl->options.handlers.on_control(
          conn, std::span<const std::byte>(static_cast<const std::byte*>(data), length));
    return UCS_OK;
  }

  static ucs_status_t AmData(void* arg, const void* header, size_t header_length, void* data,
                             size_t length, const ucp_am_recv_param_t* param) {
    auto* impl = static_cast<Impl*>(arg);
    const ConnId conn = (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP)
                            ? impl->ConnOf(param->reply_ep)
                            : 0;
    std::byte* dest = nullptr;
    uint64_t cookie = 0;
    std::vector<DataPiece> pieces;
    if (impl->options.handlers.on_data)
      impl->options.handlers.on_data(
          conn, std::span<const std::byte>(static_cast<const std::byte*>(header), header_length),
          length, &dest, &pieces, &cookie);
    if (dest == nullptr && pieces.empty())
      return (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) ? UCS_ERR_REJECTED : UCS_OK;
    if (!(param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV)) {
      // Eager: the bytes are already here.
      if (dest != nullptr) {
        if (length) std::memcpy(dest, data, length);
      } else {
        const auto* from = static_cast<const std::byte*>(data);
        for (const DataPiece& piece : pieces) {
          std::memcpy(piece.data, from, piece.length);
          from += piece.length;
        }
      }
      if (impl->options.handlers.on_data_done)
        impl->options.handlers.on_data_done(conn, cookie, Status::OK());
      return UCS_OK;
    }
    auto* op = new Op;
    op->impl = impl;
    op->conn = conn;
    op->cookie = cookie;
    op->is_recv = true;
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    p.cb.recv_am = RecvDone;
    p.user_data = op;
    if (dest == nullptr) {
      // Several places in order: an iov receive (UCX unpacks the message into them).
      op->iov.resize(pieces.size());
      for (size_t i = 0; i < pieces.size(); ++i) op->iov[i] = {pieces[i].data, pieces[i].length};
      p.op_attr_mask |= UCP_OP_ATTR_FIELD_DATATYPE;
      p.datatype = ucp_dt_make_iov();
      impl->Track(op, ucp_am_recv_data_nbx(impl->worker, data, op->iov.data(), op->iov.size(), &p),
                  "data receive");
      return UCS_OK;
    }
    if (ucp_mem_h m = impl->MemhFor(dest, length)) {
      p.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
      p.memh = m;
    }
    impl->Track(op, ucp_am_recv_data_nbx(impl->worker, data, dest, length, &p), "data receive");
    return UCS_OK;
  }

  void Loop() {
    thread_id = std::this_thread::get_id();
    int idle = 0;
    auto last_tick = std::chrono::steady_clock::now();
    while (!stop.load(std::memory_order_relaxed)) {
      RunTasks();
      const unsigned n = ucp_worker_progress(worker);
      const auto now = std::chrono::steady_clock::now();
      if (now - last_tick >= options.tick) {
        last_tick = now;
        ReapCloses();
        if (options.handlers.on_tick) options.handlers.on_tick();
      }
      if (n != 0) {
        idle = 0;
        continue;
      }
      if (++idle < options.spin_rounds) continue;
      idle = 0;
      {
        std::lock_guard<std::mutex> lock(mu);
        if (!tasks.empty()) continue;
      }
      const ucs_status_t s = ucp_worker_arm(worker);
      if (s == UCS_ERR_BUSY) continue;
      epoll_event ev[4];
      const int timeout_ms = static_cast<int>(options.tick.count());
      const int got = ::epoll_wait(epoll_fd, ev, 4, timeout_ms);
      for (int i = 0; i < got; ++i) {
        if (ev[i].data.fd == wake_fd) {
          uint64_t v;
          [[maybe_unused]] ssize_t r = ::read(wake_fd, &v, sizeof(v));
        }
      }
    }
    Shutdown();
  }

  void Shutdown() {
    RunTasks();
    std::vector<ConnId> ids;
    for (auto& [id, c] : conns) ids.push_back(id);
    for (ConnId id : ids) {
      auto it = conns.find(id);
      if (it == conns.end()) continue;
      Conn c = it->second;
      conns.erase(it);
      by_ep.erase(c.ep);
      if (c.own) CloseEp(c.ep, true);
    }
    // Force-closing completes every request of those endpoints; progress until they report, a
    // bounded number of rounds (requests on peers' reply connections are cancelled below).
    for (int i = 0; i < 10000 && !inflight.empty(); ++i) {
      ucp_worker_progress(worker);
      RunTasks();
    }
    for (auto& [op, req] : inflight) {
      ucp_request_cancel(worker, req);
    }
    for (int i = 0; i < 1000 && !inflight.empty(); ++i) ucp_worker_progress(worker);
    for (int i = 0; i < 100; ++i) {
      ucp_worker_progress(worker);
      RunTasks();
    }
    // A flushing close still waiting on a live peer is released by UCX when it completes.
    ReapCloses();
    for (ucs_status_ptr_t r : closing) ucp_request_free(r);
    closing.clear();
  }
};

UcxEngine::UcxEngine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

UcxEngine::~UcxEngine() { Stop(); }

void UcxEngine::Stop() {
  impl_->stop = true;
  uint64_t one = 1;
  [[maybe_unused]] ssize_t r = ::write(impl_->wake_fd, &one, sizeof(one));
  if (impl_->thread.joinable()) impl_->thread.join();
}

namespace {

// The name of the interface that holds IP address `addr` (IPv4 or IPv6 text).
Result<std::string> InterfaceOf(const std::string& addr) {
  in_addr v4{};
  in6_addr v6{};
  const bool is_v4 = ::inet_pton(AF_INET, addr.c_str(), &v4) == 1;
  if (!is_v4 && ::inet_pton(AF_INET6, addr.c_str(), &v6) != 1)
    return Status::InvalidArgument("listen_addr: '" + addr + "' is not an IPv4 or IPv6 address");
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0)
    return Status::IOError(std::string("getifaddrs: ") + std::strerror(errno));
  std::string name;
  for (ifaddrs* i = list; i != nullptr && name.empty(); i = i->ifa_next) {
    if (i->ifa_addr == nullptr) continue;
    if (is_v4 && i->ifa_addr->sa_family == AF_INET &&
        reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr == v4.s_addr)
      name = i->ifa_name;
    if (!is_v4 && i->ifa_addr->sa_family == AF_INET6 &&
        std::memcmp(&reinterpret_cast<sockaddr_in6*>(i->ifa_addr)->sin6_addr, &v6, sizeof(v6)) == 0)
      name = i->ifa_name;
  }
  ::freeifaddrs(list);
  if (name.empty())
    return Status::InvalidArgument("listen_addr: no interface of this host holds '" + addr + "'");
  return name;
}

}  // namespace

Result<std::unique_ptr<UcxEngine>> UcxEngine::Open(UcxEngineOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  const auto& opt = impl->options;
  if (!opt.listen_addr.empty() && opt.listen_addr != "*") {
    STRATA_ASSIGN_OR_RETURN(impl->net_device, InterfaceOf(opt.listen_addr));
  }

  ucp_config_t* config = nullptr;
  ucs_status_t s = ucp_config_read(nullptr, nullptr, &config);
  if (s != UCS_OK) return FromUcs(s, "ucp_config_read");
  if (!opt.tls.empty()) {
    s = ucp_config_modify(config, "TLS", opt.tls.c_str());
    if (s != UCS_OK) {
      ucp_config_release(config);
      return FromUcs(s, "UCX_TLS=" + opt.tls);
    }
  }
  if (!impl->net_device.empty()) {
    s = ucp_config_modify(config, "NET_DEVICES", impl->net_device.c_str());
    if (s != UCS_OK) {
      ucp_config_release(config);
      return FromUcs(s, "UCX_NET_DEVICES=" + impl->net_device);
    }
  }
  if (std::getenv("UCX_PROTO_INDIRECT_ID") == nullptr) {
    // Requests tracked per endpoint on every endpoint, not only those with peer error handling:
    // when a data endpoint's peer dies (its socket closes), UCX then completes the rendezvous
    // receives it had accepted from that peer with an error, and their places in the pool are
    // released (PullResult::held); untracked (UCX's default there), they never completed.
    s = ucp_config_modify(config, "PROTO_INDIRECT_ID", "on");
    if (s != UCS_OK) {
      ucp_config_release(config);
      return FromUcs(s, "UCX_PROTO_INDIRECT_ID=on");
    }
  }
  ucp_params_t params{};
  params.field_mask =
      UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_NAME | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
  params.features = UCP_FEATURE_AM | UCP_FEATURE_RMA | UCP_FEATURE_WAKEUP;
  params.name = opt.name.c_str();
  // ReregisterUnit maps and unmaps memory on the caller's thread while the progress thread runs
  // the worker: the context's registration state then needs UCX's lock.
  params.mt_workers_shared = 1;
  s = ucp_init(&params, config, &impl->context);
  ucp_config_release(config);
  if (s != UCS_OK) return FromUcs(s, "ucp_init");
  if (const char* env = std::getenv("UCX_TLS"); !opt.tls.empty() || env == nullptr)
    impl->tls = opt.tls.empty() ? "all" : opt.tls;
  else
    impl->tls = env;

  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE | UCP_WORKER_PARAM_FIELD_EVENTS;
  wp.thread_mode = UCS_THREAD_MODE_SINGLE;
  wp.events = UCP_WAKEUP_RX | UCP_WAKEUP_TX | UCP_WAKEUP_RMA;
  s = ucp_worker_create(impl->context, &wp, &impl->worker);
  if (s != UCS_OK) return FromUcs(s, "ucp_worker_create");

  ucp_worker_attr_t attr{};
  attr.field_mask = UCP_WORKER_ATTR_FIELD_ADDRESS | UCP_WORKER_ATTR_FIELD_MAX_AM_HEADER;
  s = ucp_worker_query(impl->worker, &attr);
  if (s != UCS_OK) return FromUcs(s, "ucp_worker_query");
  impl->max_am_header = attr.max_am_header;
  const auto* a = reinterpret_cast<const std::byte*>(attr.address);
  impl->address.assign(a, a + attr.address_length);
  ucp_worker_release_address(impl->worker, attr.address);

  impl->registered.reserve(opt.regions.size());
  for (const MemoryRegion& r : opt.regions) {
    if (r.base == nullptr || r.size == 0)
      return Status::InvalidArgument("UcxEngine: an empty memory region cannot be registered");
    Impl::Registered& reg = impl->registered.emplace_back();
    reg.base = static_cast<std::byte*>(r.base);
    reg.size = r.size;
    reg.unit = r.unit == 0 || r.unit > r.size ? r.size : r.unit;
    reg.units = (r.size + reg.unit - 1) / reg.unit;
    reg.memhs.reset(new std::atomic<ucp_mem_h>[reg.units]);
    for (size_t i = 0; i < reg.units; ++i) reg.memhs[i].store(nullptr, std::memory_order_relaxed);
    for (size_t i = 0; i < reg.units; ++i) {
      const size_t at = i * reg.unit;
      const size_t length = std::min(reg.unit, reg.size - at);
      STRATA_ASSIGN_OR_RETURN(ucp_mem_h memh, impl->Map(reg.base + at, length));
      reg.memhs[i].store(memh, std::memory_order_release);
    }
  }

  ucp_am_handler_param_t hp{};
  hp.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS |
                  UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
  hp.flags = UCP_AM_FLAG_WHOLE_MSG;
  hp.arg = impl.get();
  hp.id = kAmControl;
  hp.cb = &Impl::AmControl;
  s = ucp_worker_set_am_recv_handler(impl->worker, &hp);
  if (s != UCS_OK) return FromUcs(s, "ucp_worker_set_am_recv_handler");
  hp.id = kAmData;
  hp.cb = &Impl::AmData;
  s = ucp_worker_set_am_recv_handler(impl->worker, &hp);
  if (s != UCS_OK) return FromUcs(s, "ucp_worker_set_am_recv_handler");

  s = ucp_worker_get_efd(impl->worker, &impl->worker_fd);
  if (s != UCS_OK) return FromUcs(s, "ucp_worker_get_efd");
  impl->wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  impl->epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  if (impl->wake_fd < 0 || impl->epoll_fd < 0)
    return Status::IOError(std::string("UcxEngine: eventfd/epoll: ") + std::strerror(errno));
  for (int fd : {impl->worker_fd, impl->wake_fd}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(impl->epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0)
      return Status::IOError(std::string("UcxEngine: epoll_ctl: ") + std::strerror(errno));
  }
  Impl* raw = impl.get();
  std::unique_ptr<UcxEngine> engine(new UcxEngine(std::move(impl)));
  std::promise<void> started;
  auto started_f = started.get_future();
  raw->thread = std::thread([raw, &started] {
    raw->thread_id = std::this_thread::get_id();
    started.set_value();
    raw->Loop();
  });
  started_f.wait();
  return engine;
}

const std::vector<std::byte>& UcxEngine::worker_address() const { return impl_->address; }
const std::string& UcxEngine::tls() const { return impl_->tls; }
const std::string& UcxEngine::net_device() const { return impl_->net_device; }
Status UcxEngine::ReregisterUnit(const void* unit_base) {
  Impl* impl = impl_.get();
  const auto* p = static_cast<const std::byte*>(unit_base);
  std::lock_guard<std::mutex> lock(impl->register_mu);
  for (Impl::Registered& r : impl->registered) {
    if (p < r.base || p >= r.base + r.size) continue;
    const size_t offset = static_cast<size_t>(p - r.base);
    if (offset % r.unit != 0) break;
    const size_t i = offset / r.unit;
    // The old handle goes first: it holds the replaced memory's pages.
    if (ucp_mem_h old = r.memhs[i].exchange(nullptr, std::memory_order_acq_rel))
      ucp_mem_unmap(impl->context, old);
    STRATA_ASSIGN_OR_RETURN(ucp_mem_h memh,
                            impl->Map(r.base + offset, std::min(r.unit, r.size - offset)));
    r.memhs[i].store(memh, std::memory_order_release);
    impl->reregistered.fetch_add(1, std::memory_order_relaxed);
    return Status::OK();
  }
  return Status::InvalidArgument("UcxEngine: no registered unit starts at that address");
}

uint64_t UcxEngine::flushing_closes() const {
  return impl_->flushing_closes.load(std::memory_order_relaxed);
}

uint64_t UcxEngine::units_reregistered() const {
  return impl_->reregistered.load(std::memory_order_relaxed);
}

bool UcxEngine::OnProgressThread() const {
  return std::this_thread::get_id() == impl_->thread_id;
}

void UcxEngine::Post(std::function<void()> fn) {
  if (OnProgressThread())
    impl_->Post(std::move(fn));
  else
    impl_->Enqueue(std::move(fn));
}

Result<ConnId> UcxEngine::Connect(std::span<const std::byte> worker_address,
                                  PeerFailure failure) {
  if (worker_address.empty()) return Status::InvalidArgument("Connect: empty worker address");
  std::vector<std::byte> addr(worker_address.begin(), worker_address.end());
  auto work = [this, addr = std::move(addr), failure]() -> Result<ConnId> {
    Impl* impl = impl_.get();
    ucp_ep_params_t ep{};
    ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                    UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.address = reinterpret_cast<const ucp_address_t*>(addr.data());
    ep.err_mode = failure == PeerFailure::kDetectedByUcx ? UCP_ERR_HANDLING_MODE_PEER
                                                         : UCP_ERR_HANDLING_MODE_NONE;
    ep.err_handler.cb = &Impl::EpError;
    ep.err_handler.arg = impl;
    ucp_ep_h h = nullptr;
    ucs_status_t s = ucp_ep_create(impl->worker, &ep, &h);
    if (s != UCS_OK) return FromUcs(s, "ucp_ep_create");
    const ConnId id = impl->next_conn++;
    impl->conns[id] = Impl::Conn{id, h, true};
    impl->by_ep[h] = id;
    return id;
  };
  if (OnProgressThread()) return work();
  auto promise = std::make_shared<std::promise<Result<ConnId>>>();
  auto future = promise->get_future();
  impl_->Enqueue([promise, work = std::move(work)]() mutable { promise->set_value(work()); });
  return future.get();
}

void UcxEngine::SendControl(ConnId conn, std::vector<std::byte> message,
                            std::function<void(const Status&)> done) {
  auto* op = new Impl::Op;
  op->impl = impl_.get();
  op->conn = conn;
  op->buffer = std::move(message);
  op->done = std::move(done);
  Post([impl = impl_.get(), op] {
    auto it = impl->conns.find(op->conn);
    if (it == impl->conns.end()) {
      impl->Complete(op, Status::Unavailable("send: connection is closed"));
      return;
    }
    ucp_request_param_t p{};
    p.op_attr_mask =
        UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_AM_SEND_FLAG_REPLY;
    p.cb.send = &Impl::SendDone;
    p.user_data = op;
    impl->Track(op,
                ucp_am_send_nbx(it->second.ep, kAmControl, nullptr, 0, op->buffer.data(),
                                op->buffer.size(), &p),
                "control send");
  });
}

void UcxEngine::SendData(ConnId conn, std::span<const std::byte> header, const std::byte* data,
                         size_t length, std::function<void(const Status&)> done) {
  auto* op = new Impl::Op;
  op->impl = impl_.get();
  op->conn = conn;
  op->done = std::move(done);
  const size_t hlen = std::min(header.size(), sizeof(op->header));
  std::memcpy(op->header, header.data(), hlen);
  Post([impl = impl_.get(), op, hlen, data, length] {
    auto it = impl->conns.find(op->conn);
    if (it == impl->conns.end()) {
      impl->Complete(op, Status::Unavailable("send: connection is closed"));
      return;
    }
    ucp_request_param_t p{};
    p.op_attr_mask =
        UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
    // Large blocks go by rendezvous (zero-copy into the puller's pool); small ones and bare
    // statuses as UCX chooses.
    p.flags = UCP_AM_SEND_FLAG_REPLY | (length >= impl->options.rndv_threshold ? UCP_AM_SEND_FLAG_RNDV : 0);
    p.cb.send = &Impl::SendDone;
    p.user_data = op;
    if (ucp_mem_h m = impl->MemhFor(data, length)) {
      p.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
      p.memh = m;
    }
    impl->Track(op, ucp_am_send_nbx(it->second.ep, kAmData, op->header, hlen, data, length, &p),
                "data send");
  });
}

void UcxEngine::SendDataPieces(ConnId conn, std::span<const std::byte> header,
                               std::vector<DataPiece> pieces,
                               std::function<void(const Status&)> done) {
  auto* op = new Impl::Op;
  op->impl = impl_.get();
  op->conn = conn;
  op->done = std::move(done);
  op->long_header.assign(header.begin(), header.end());
  size_t length = 0;
  op->iov.resize(pieces.size());
  for (size_t i = 0; i < pieces.size(); ++i) {
    op->iov[i] = {pieces[i].data, pieces[i].length};
    length += pieces[i].length;
  }
  // Pieces that follow each other in memory, inside one registered unit, go as one contiguous
  // buffer with its memory handle: UCX 1.13's rendezvous packs the sender's remote key (and the
  // receiver may then get the bytes zero-copy, cma on one host) only for a contiguous send; an
  // iov send always goes as fragments through the transport.
  const bool adjacent = Adjacent(pieces);
  Post([impl = impl_.get(), op, length, adjacent] {
    auto it = impl->conns.find(op->conn);
    if (it == impl->conns.end()) {
      impl->Complete(op, Status::Unavailable("send: connection is closed"));
      return;
    }
    ucp_request_param_t p{};
    p.op_attr_mask =
        UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_AM_SEND_FLAG_REPLY |
              (length >= impl->options.rndv_threshold ? UCP_AM_SEND_FLAG_RNDV : 0);
    p.cb.send = &Impl::SendDone;
    p.user_data = op;
    if (ucp_mem_h memh = adjacent ? impl->MemhFor(op->iov[0].buffer, length) : nullptr) {
      p.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
      p.memh = memh;
      impl->Track(op,
                  ucp_am_send_nbx(it->second.ep, kAmData, op->long_header.data(),
                                  op->long_header.size(), op->iov[0].buffer, length, &p),
                  "data send");
      return;
    }
    p.op_attr_mask |= UCP_OP_ATTR_FIELD_DATATYPE;
    p.datatype = ucp_dt_make_iov();
    impl->Track(op,
                ucp_am_send_nbx(it->second.ep, kAmData, op->long_header.data(),
                                op->long_header.size(), op->iov.data(), op->iov.size(), &p),
                "data send");
  });
}

size_t UcxEngine::max_am_header() const { return impl_->max_am_header; }

void UcxEngine::Close(ConnId conn, bool force) {
  Post([impl = impl_.get(), conn, force] {
    auto it = impl->conns.find(conn);
    if (it == impl->conns.end()) return;
    if (!it->second.own) {
      // A peer's reply connection is the peer's to close; just forget it.
      impl->by_ep.erase(it->second.ep);
      impl->conns.erase(it);
      return;
    }
    ucp_ep_h ep = it->second.ep;
    impl->by_ep.erase(ep);
    impl->conns.erase(it);
    impl->CloseEp(ep, force);
  });
}

}  // namespace strata::transport
