#include "daemon/shared_kv.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

namespace strata {

Result<SharedKv> SharedKv::Map(int fd, const ipc::ShareKvRequest& request, uint64_t max_bytes) {
  struct Closer {
    int fd;
    ~Closer() {
      if (fd >= 0) ::close(fd);
    }
  } closer{fd};
  auto refuse = [](const std::string& why) {
    return Status::InvalidArgument("ShareKv: " + why);
  };
  if (fd < 0) return refuse("the request came without a memfd");
  const uint64_t bytes = request.bytes;
  if (bytes == 0) return refuse("a memfd of 0 bytes");
  if (bytes > max_bytes)
    return refuse("a memfd of " + std::to_string(bytes) + " bytes exceeds the daemon's limit of " +
                  std::to_string(max_bytes));
  constexpr int kSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
  const int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0 || (seals & kSeals) != kSeals)
    return refuse("not a memfd sealed with F_SEAL_SHRINK, F_SEAL_GROW and F_SEAL_SEAL");
  struct stat st;
  if (::fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) != bytes)
    return refuse("the memfd is not the announced " + std::to_string(bytes) + " bytes");
  if (static_cast<uint64_t>(st.st_blocks) * 512 < bytes)
    return refuse("the memfd has unallocated pages (" +
                  std::to_string(static_cast<uint64_t>(st.st_blocks) * 512) + " of " +
                  std::to_string(bytes) + " bytes)");
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  std::vector<Range> ranges;
  for (size_t i = 0; i < request.client_addresses.size(); ++i) {
    const Range r{request.client_addresses[i], request.lengths[i], request.offsets[i]};
    if (r.length == 0 || r.offset > bytes || r.length > bytes - r.offset ||
        r.client_address + r.length < r.client_address || (r.client_address | r.length) % page)
      return refuse("range " + std::to_string(i) + " (" + std::to_string(r.length) +
                    " bytes at offset " + std::to_string(r.offset) +
                    ") is empty, unaligned, wraps or lies outside the memfd");
    ranges.push_back(r);
  }
  if (ranges.empty()) return refuse("no range");
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.client_address < b.client_address; });
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i - 1].client_address + ranges[i - 1].length > ranges[i].client_address)
      return refuse("two ranges overlap in the client's address space");
  void* base = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED)
    return Status::IOError(std::string("ShareKv: mapping the memfd: ") + std::strerror(errno));
  SharedKv m;
  m.base_ = static_cast<const std::byte*>(base);
  m.size_ = bytes;
  m.ranges_ = std::move(ranges);
  m.populate_ = BackgroundPopulate(base, bytes, uint64_t{64} << 20, page);
  return m;
}

void SharedKv::Release() {
  populate_.Stop();
  if (base_ != nullptr) ::munmap(const_cast<std::byte*>(base_), size_);
  base_ = nullptr;
}

SharedKv& SharedKv::operator=(SharedKv&& other) noexcept {
  if (this != &other) {
    Release();
    base_ = std::exchange(other.base_, nullptr);
    size_ = std::exchange(other.size_, 0);
    ranges_ = std::move(other.ranges_);
    populate_ = std::move(other.populate_);
  }
  return *this;
}

SharedKv::~SharedKv() { Release(); }

const std::byte* SharedKv::Find(uint64_t address, uint64_t length) const {
  auto it = std::upper_bound(ranges_.begin(), ranges_.end(), address,
                             [](uint64_t a, const Range& r) { return a < r.client_address; });
  if (it == ranges_.begin()) return nullptr;
  const Range& r = *--it;
  const uint64_t at = address - r.client_address;
  if (at > r.length || length > r.length - at) return nullptr;
  return base_ + r.offset + at;
}

Result<uint64_t> SharedKvSet::Add(SharedKv share, uint64_t max_bytes) {
  if (share.bytes() > max_bytes - std::min(bytes_, max_bytes))
    return Status::InvalidArgument("ShareKv: this connection's shares would exceed the daemon's "
                                   "limit of " + std::to_string(max_bytes) + " bytes");
  bytes_ += share.bytes();
  const uint64_t id = next_id_++;
  shares_.emplace(id, std::move(share));
  return id;
}

Status SharedKvSet::Remove(uint64_t id) {
  auto it = shares_.find(id);
  if (it == shares_.end())
    return Status::NotFound("UnshareKv: no share " + std::to_string(id) + " on this connection");
  bytes_ -= it->second.bytes();
  shares_.erase(it);
  return Status::OK();
}

const std::byte* SharedKvSet::Find(uint64_t address, uint64_t length) const {
  for (const auto& [id, share] : shares_)
    if (const std::byte* p = share.Find(address, length)) return p;
  return nullptr;
}

}  // namespace strata
