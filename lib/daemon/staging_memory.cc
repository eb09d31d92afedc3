#include "daemon/staging_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

namespace strata {

Result<StagingMemory> StagingMemory::Map(int fd, uint64_t announced_bytes, uint64_t max_bytes) {
  struct Closer {
    int fd;
    ~Closer() {
      if (fd >= 0) ::close(fd);
    }
  } closer{fd};
  if (fd < 0) return Status::InvalidArgument("Hello came without a staging memfd");
  if (announced_bytes == 0) return Status::InvalidArgument("staging memory of 0 bytes");
  if (announced_bytes > max_bytes)
    return Status::InvalidArgument("staging memory of " + std::to_string(announced_bytes) +
                                   " bytes exceeds the daemon's limit of " +
                                   std::to_string(max_bytes));
  const int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW))
    return Status::InvalidArgument(
        "staging memory is not a memfd sealed with F_SEAL_SHRINK and F_SEAL_GROW");
  struct stat st;
  if (::fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) != announced_bytes)
    return Status::InvalidArgument("staging memfd is not the announced " +
                                   std::to_string(announced_bytes) + " bytes");
  void* base = ::mmap(nullptr, announced_bytes, PROT_READ, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED)
    return Status::IOError(std::string("mapping a client's staging memory: ") +
                           std::strerror(errno));
  StagingMemory m;
  m.base_ = static_cast<const std::byte*>(base);
  m.size_ = announced_bytes;
  return m;
}

StagingMemory& StagingMemory::operator=(StagingMemory&& other) noexcept {
  if (this != &other) {
    if (base_ != nullptr) ::munmap(const_cast<std::byte*>(base_), size_);
    base_ = std::exchange(other.base_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

StagingMemory::~StagingMemory() {
  if (base_ != nullptr) ::munmap(const_cast<std::byte*>(base_), size_);
}

}  // namespace strata
