// Verified reads of the disk tier's payloads with Linux AIO: a payload is read
// as 512 KiB pieces, up to four in flight, and each piece is hashed (XXH3-64,
// strata/block_format.h) as it lands, so the checksum overlaps the I/O instead
// of following it (docs/store.md, "Reads"). One AIO context per reading thread
// (io_setup is a syscall and a kernel allocation; a context per read would cost
// more than it saves). Linux AIO, not io_uring: it needs no library, and with
// O_DIRECT on ext4/xfs it is truly asynchronous.
//
// Thread-safety: every function may be called from any thread (contexts are per
// thread).
#pragma once

#include <cstddef>
#include <cstdint>

#include "strata/block_format.h"
#include "strata/status.h"

namespace strata::store::disk {

// Reads in flight per read.
inline constexpr unsigned kAioDepth = 4;
// Bytes of one piece.
inline constexpr uint64_t kAioPiece = 512 * 1024;

// True when this thread has an AIO context (io_setup succeeded).
bool AioAvailable();

// Reads `alloc` bytes at `offset` of `fd` (an O_DIRECT file) into `dst` and
// checks the first header.payload_length of them against
// header.payload_checksum. Unavailable when AIO cannot be used (nothing was
// submitted: the caller falls back to pread); Corruption on a checksum mismatch
// or a payload past the end of the file; IOError on a failed read. Never
// returns while a read it submitted is still in flight (the kernel writes into
// dst until it completes). REQUIRES: dst, offset and alloc 4 KiB-aligned; dst
// holds alloc bytes.
Status ReadVerifiedAio(int fd, uint64_t offset, std::byte* dst, uint32_t alloc,
                       const BlockHeader& header);

}  // namespace strata::store::disk
