#include "transport/testing/memfd_block_pool.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace strata::transport::testing {

Result<std::unique_ptr<MemfdBlockPool>> MemfdBlockPool::Open(size_t slots, size_t slot_bytes) {
  std::unique_ptr<MemfdBlockPool> p(new MemfdBlockPool);
  p->slots_ = slots;
  p->slot_bytes_ = slot_bytes;
  p->size_ = slots * slot_bytes;
  p->fd_ = ::memfd_create("strata-pool", MFD_CLOEXEC);
  if (p->fd_ < 0) return Status::IOError(std::string("memfd_create: ") + std::strerror(errno));
  if (::ftruncate(p->fd_, static_cast<off_t>(p->size_)) != 0)
    return Status::IOError(std::string("ftruncate: ") + std::strerror(errno));
  void* m = ::mmap(nullptr, p->size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, p->fd_, 0);
  if (m == MAP_FAILED) return Status::IOError(std::string("mmap: ") + std::strerror(errno));
  p->base_ = static_cast<std::byte*>(m);
  p->pins_.assign(slots, 0);
  return p;
}

MemfdBlockPool::~MemfdBlockPool() {
  if (base_) ::munmap(base_, size_);
  if (fd_ >= 0) ::close(fd_);
}

void MemfdBlockPool::Put(size_t i, const BlockKey& key, const NamespaceId& ns,
                         std::span<const std::byte> payload) {
  std::byte* s = slot(i);
  const BlockHeader h = MakeBlockHeader(key, ns, Codec::kNone, payload);
  EncodeBlockHeader(h, std::span<std::byte, kBlockHeaderSize>(s, kBlockHeaderSize));
  if (!payload.empty()) std::memcpy(s + kBlockHeaderSize, payload.data(), payload.size());
  Insert(i, key);
}

void MemfdBlockPool::Insert(size_t i, const BlockKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  index_[key] = i;
}

std::optional<size_t> MemfdBlockPool::Find(const BlockKey& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = index_.find(key);
  if (it == index_.end()) return std::nullopt;
  return it->second;
}

size_t MemfdBlockPool::pinned() const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t n = 0;
  for (uint32_t c : pins_) n += c;
  return n;
}

Result<PinnedBlock> MemfdBlockPool::Pin(const BlockKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = index_.find(key);
  if (it == index_.end()) return Status::NotFound("block " + key.ToHex() + " is not held here");
  const size_t i = it->second;
  ++pins_[i];
  std::byte* s = slot(i);
  uint64_t payload = 0;
  std::memcpy(&payload, s + 8, sizeof(payload));  // header field: payload length (LE host)
  const size_t size = std::min(slot_bytes_, static_cast<size_t>(kBlockHeaderSize + payload));
  return PinnedBlock{s, size, i};
}

void MemfdBlockPool::Unpin(uint64_t pin) {
  std::lock_guard<std::mutex> lock(mu_);
  if (pin < pins_.size() && pins_[pin] > 0) --pins_[pin];
}

}  // namespace strata::transport::testing
