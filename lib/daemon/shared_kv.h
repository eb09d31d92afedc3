// SharedKv: an engine's host KV cache as the daemon maps it, read-only, after the client moved
// the cache onto a memfd and handed it over (ShareKvRequest; docs/data-plane.md, "Engine KV
// through the daemon's own mapping"). A cross-memory paged commit whose chunks lie in a share is
// gathered from this mapping: no process_vm_readv, no page pinning per store.
//
// The daemon trusts nothing about the memfd but what the kernel enforces: it must be sealed
// against shrinking and growing (a client that truncated it would make the daemon's gather fault
// with SIGBUS) and against changing its seals, be exactly the announced size, within the
// daemon's limit, and have every page allocated (a read fault on a hole would allocate a page
// charged to the daemon). The client may write the memory at any time (it is the engine's cache):
// what is stored is what the daemon copied and hashed, never the mapping itself.
//
// The mapping's page tables are filled after the ShareKv reply, by a thread of the share's own,
// in steps of 64 MiB: filling them took about 1 s per GiB of 4 KiB pages on the development VM,
// so a cache of tens of GiB populated inside the request outlasted the client's request timeout.
// A store that comes first takes the page faults itself.
//
// Thread-safety: a SharedKvSet is changed only by its session's thread, which is also the only
// thread that runs the session's stores (their copy threads read it while the session waits).
// The populating thread only touches the mapping, and is stopped and joined before it is unmapped.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "core/page_populate.h"
#include "ipc/ipc_protocol.h"
#include "strata/result.h"

namespace strata {

class SharedKv {
 public:
  struct Range {
    uint64_t client_address = 0;
    uint64_t length = 0;
    uint64_t offset = 0;  // in the memfd
  };
  // Maps `fd` (always closed, mapped or not) read-only, its page tables filled in the
  // background (above). InvalidArgument when the
  // memfd lacks F_SEAL_SHRINK, F_SEAL_GROW or F_SEAL_SEAL, is not `request.bytes` long, is larger
  // than `max_bytes`, has unallocated pages, or a range is empty, outside the memfd, not
  // page-aligned, wraps around, or overlaps another in the client's address space.
  static Result<SharedKv> Map(int fd, const ipc::ShareKvRequest& request, uint64_t max_bytes);

  SharedKv() = default;
  SharedKv(SharedKv&& other) noexcept { *this = std::move(other); }
  SharedKv& operator=(SharedKv&& other) noexcept;
  SharedKv(const SharedKv&) = delete;
  SharedKv& operator=(const SharedKv&) = delete;
  ~SharedKv();

  uint64_t bytes() const { return size_; }
  // Where the daemon reads the client's [address, address + length): null unless it lies whole
  // in one range.
  const std::byte* Find(uint64_t address, uint64_t length) const;

 private:
  void Release();  // stops the populating thread, then unmaps

  const std::byte* base_ = nullptr;
  size_t size_ = 0;
  std::vector<Range> ranges_;  // sorted by client_address, disjoint
  BackgroundPopulate populate_;  // filling the page tables after the reply
};

// The shares of one session, by id.
class SharedKvSet {
 public:
  // Adds a share; InvalidArgument when the session's shares would exceed `max_bytes` together.
  Result<uint64_t> Add(SharedKv share, uint64_t max_bytes);
  // NotFound for an id this session does not hold.
  Status Remove(uint64_t id);
  // As SharedKv::Find, over every share.
  const std::byte* Find(uint64_t address, uint64_t length) const;
  bool empty() const { return shares_.empty(); }

 private:
  std::map<uint64_t, SharedKv> shares_;
  uint64_t next_id_ = 1;
  uint64_t bytes_ = 0;
};

}  // namespace strata
