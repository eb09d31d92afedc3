// strata_device_check: DeviceTier (store/device_tier.h) on a real GPU, without Catch2, RocksDB or
// any library beyond the CUDA runtime (CMakeLists.txt says how it builds standalone).
//
//   correctness  open on device 0 (payloads in device memory); put/get round trip byte-exact for
//                sizes 1 B .. 16 MiB, with the bytes read back from the device allocation directly;
//                misses, short buffers, corrupt payloads, duplicate puts; eviction when full with a
//                pinned block surviving; everything pinned -> NoSpace, Unpin frees room, expired
//                pins stop protecting; Acquire NotSupported; bad device ids Unavailable, bad
//                options InvalidArgument, an allocation larger than the card NoSpace; 4 threads
//                putting and getting at once
//   bandwidth    N blocks put (host -> device) and got (device -> host) through the tier, block
//                by block (Put/Get) and as one batch (PutBatch/GetBatch: one stream, one
//                synchronisation; bytes compared), from pageable and from pinned host memory,
//                beside cudaMemcpy of the same blocks one call per block and of all N bytes in one
//                call; medians over --reps batches
//
// Exit status 1 on any failure. Put/Get copy with cudaMemcpy on the calling thread (the default
// stream), the batch calls on the tier's stream; timings are wall-clock
// (std::chrono::steady_clock) around calls that return once their copies are done.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "store/device_tier.h"

namespace strata::store {
namespace {

int g_failures = 0;

void Fail(const std::string& what) {
  std::printf("FAIL  %s\n", what.c_str());
  ++g_failures;
}
void Pass(const std::string& what) { std::printf("ok    %s\n", what.c_str()); }
bool Expect(bool cond, const std::string& what) {
  if (!cond) Fail(what);
  return cond;
}
std::string Code(const Status& st) { return std::string(StatusCodeName(st.code())); }

const NamespaceId kNs{0x5354524154410000ULL, 0x6465766963650001ULL};

BlockKey Key(uint64_t i, uint64_t salt = 0) {
  uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ULL ^ (salt * 0xD1B54A32D192ED03ULL);
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ULL;
  x ^= x >> 29;
  return BlockKey{x ^ 0xA5A5A5A5A5A5A5A5ULL, x * 0x94D049BB133111EBULL + i};
}

void Fill(std::byte* p, size_t n, const BlockKey& key) {
  uint64_t s = key.low ^ (key.high << 1) ^ n;
  if (s == 0) s = 1;
  for (size_t i = 0; i < n; ++i) {
    if (i % 8 == 0) {
      s ^= s << 13;
      s ^= s >> 7;
      s ^= s << 17;
    }
    p[i] = static_cast<std::byte>(s >> (8 * (i % 8)));
  }
}
std::vector<std::byte> Payload(const BlockKey& key, size_t n) {
  std::vector<std::byte> v(n);
  Fill(v.data(), n, key);
  return v;
}
BlockHeader Header(const BlockKey& key, std::span<const std::byte> payload) {
  return MakeBlockHeader(key, kNs, Codec::kNone, payload);
}

std::unique_ptr<DeviceTier> OpenOrFail(const DeviceTierOptions& o, const std::string& what) {
  auto t = DeviceTier::Open(o);
  if (!t.ok()) {
    Fail(what + ": Open: " + t.status().ToString());
    return nullptr;
  }
  return std::move(*t);
}

// ---------------------------------------------------------------- correctness
void CheckRoundTrip() {
  DeviceTierOptions o;
  o.capacity_bytes = uint64_t{256} << 20;
  auto t = OpenOrFail(o, "round trip");
  if (!t) return;
  bool ok = Expect(t->kind() == TierKind::kDevice, "round trip: kind is not kDevice");
  cudaPointerAttributes attr{};
  ok = ok && Expect(cudaPointerGetAttributes(&attr, t->device_base()) == cudaSuccess &&
                        attr.type == cudaMemoryTypeDevice && attr.device == 0,
                    "round trip: device_base() is not device memory on device 0");
  const size_t sizes[] = {
      1, 3, 4095, 4096, 4097, 65536, 65537, (1u << 20) + 3, 2u << 20, (16u << 20) - 1, 16u << 20};
  for (size_t i = 0; i < std::size(sizes) && ok; ++i) {
    const size_t n = sizes[i];
    const BlockKey k = Key(i, 1);
    const auto p = Payload(k, n);
    const BlockHeader h = Header(k, p);
    Status st = t->Put(h, p);
    if (!Expect(st.ok(), "round trip " + std::to_string(n) + " B: Put: " + st.ToString())) break;
    std::vector<std::byte> out(n + 7, std::byte{0xEE});
    auto g = t->Get(k, out);
    ok = Expect(g.ok(), "round trip " + std::to_string(n) + " B: Get: " + g.status().ToString());
    ok = ok && Expect(*g == h, "round trip " + std::to_string(n) + " B: header differs");
    ok = ok && Expect(std::memcmp(out.data(), p.data(), n) == 0 && out[n] == std::byte{0xEE},
                      "round trip " + std::to_string(n) + " B: bytes differ");
    auto loc = t->Find(k);
    ok = ok && Expect(loc.ok() && loc->length == n, "round trip: Find");
    if (ok) {  // the bytes really are in the device allocation, at the offset Find reports
      std::vector<std::byte> direct(n);
      ok = Expect(
          cudaMemcpy(direct.data(), static_cast<char*>(t->device_base()) + loc->offset, n,
                     cudaMemcpyDeviceToHost) == cudaSuccess &&
              direct == p,
          "round trip " + std::to_string(n) + " B: device memory at the block's offset differs");
    }
  }
  if (!ok) return;
  Pass(
      "round trip 1 B .. 16 MiB: Put/Get byte-exact, bytes found in device memory at Find's "
      "offset");

  const BlockKey k0 = Key(0, 1);
  std::vector<std::byte> small(10), buf(1 << 20);
  ok = Expect(t->Get(k0, small).ok(), "1-byte block into a 10-byte buffer");
  ok = Expect(t->Get(Key(3, 1), small).status().code() == StatusCode::kInvalidArgument,
              "Get into a short buffer: want InvalidArgument") &&
       ok;
  ok = Expect(t->Get(Key(999, 1), buf).status().code() == StatusCode::kNotFound,
              "Get of a missing key: want NotFound") &&
       ok;
  const uint64_t blocks = t->Stats().blocks;
  auto p = Payload(Key(5, 1), 65536);
  ok = Expect(t->Put(Header(Key(5, 1), p), p).ok() && t->Stats().blocks == blocks,
              "duplicate Put: want OK, nothing added") &&
       ok;
  auto bad = Payload(Key(500, 1), 65536);
  const BlockHeader bh = Header(Key(500, 1), bad);
  bad[1234] ^= std::byte{1};
  Status st = t->Put(bh, bad);
  ok = Expect(st.code() == StatusCode::kCorruption,
              "corrupt payload Put: want Corruption, got " + Code(st)) &&
       ok;
  ok = Expect(!t->Find(Key(500, 1)).ok(), "corrupt payload was stored") && ok;
  ok = Expect(t->Erase(k0).ok() && t->Get(k0, small).status().code() == StatusCode::kNotFound,
              "Erase then Get: want NotFound") &&
       ok;
  ok = Expect(t->Acquire(Key(6, 1)).status().code() == StatusCode::kNotSupported,
              "Acquire: want NotSupported (no zero-copy host view of device memory)") &&
       ok;
  if (ok) Pass("misses, short buffer, duplicate put, corrupt payload, erase, Acquire NotSupported");
}

void CheckEviction() {
  DeviceTierOptions o;
  o.capacity_bytes = 4 << 20;  // 64 blocks of 64 KiB
  o.pool.slab_bytes = 2 << 20;
  auto t = OpenOrFail(o, "eviction");
  if (!t) return;
  const size_t kBlock = 65536;
  bool ok = true;
  for (uint64_t i = 0; i < 200 && ok; ++i) {
    const auto p = Payload(Key(i, 2), kBlock);
    Status st = t->Put(Header(Key(i, 2), p), p);
    ok = Expect(st.ok(), "eviction: Put " + std::to_string(i) + ": " + st.ToString());
    if (ok && i == 0)
      ok = Expect(t->Pin(Key(0, 2), std::chrono::seconds(60)).ok(), "eviction: Pin");
  }
  if (!ok) return;
  const TierStats s = t->Stats();
  ok = Expect(s.evictions > 0 && s.blocks <= 64 && s.blocks + s.evictions == 200,
              "eviction: stats blocks " + std::to_string(s.blocks) + " evictions " +
                  std::to_string(s.evictions));
  std::vector<std::byte> out(kBlock);
  for (uint64_t i : {uint64_t{0}, uint64_t{199}}) {
    auto h = t->Get(Key(i, 2), out);
    ok = Expect(h.ok() && out == Payload(Key(i, 2), kBlock),
                "eviction: block " + std::to_string(i) + " lost or wrong") &&
         ok;
  }
  uint64_t found = 0;
  for (uint64_t i = 0; i < 200; ++i) found += t->Find(Key(i, 2)).ok();
  ok = Expect(found == s.blocks, "eviction: " + std::to_string(found) +
                                     " keys findable, stats say " + std::to_string(s.blocks)) &&
       ok;
  if (ok)
    Pass("eviction: 200 x 64 KiB into 4 MiB: " + std::to_string(s.evictions) +
         " evicted, pinned block 0 and newest block intact");
}

void CheckPins() {
  DeviceTierOptions o;
  o.capacity_bytes = 4 << 20;
  o.pool.slab_bytes = 2 << 20;
  auto t = OpenOrFail(o, "pins");
  if (!t) return;
  const size_t kBlock = 65536;
  uint64_t stored = 0;
  Status last;
  for (uint64_t i = 0; i < 200; ++i) {
    const auto p = Payload(Key(i, 3), kBlock);
    last = t->Put(Header(Key(i, 3), p), p);
    if (!last.ok()) break;
    if (!Expect(t->Pin(Key(i, 3), std::chrono::seconds(60)).ok(), "pins: Pin")) return;
    ++stored;
  }
  bool ok = Expect(last.code() == StatusCode::kNoSpace && stored >= 32 && t->Stats().evictions == 0,
                   "pins: every block pinned: want NoSpace with no eviction, got " + Code(last) +
                       " after " + std::to_string(stored) + " blocks");
  ok = Expect(t->Erase(Key(5, 3)).code() == StatusCode::kUnavailable,
              "pins: Erase of a pinned block: want Unavailable") &&
       ok;
  ok = Expect(t->Unpin(Key(5, 3)).ok(), "pins: Unpin") && ok;
  const auto p = Payload(Key(1000, 3), kBlock);
  Status st = t->Put(Header(Key(1000, 3), p), p);
  ok = Expect(st.ok() && t->Stats().evictions == 1 && !t->Find(Key(5, 3)).ok(),
              "pins: after Unpin the unpinned block makes room: " + st.ToString()) &&
       ok;
  // A pin that expires stops protecting its block.
  auto t2 = OpenOrFail(o, "pins (expiry)");
  if (!t2) return;
  uint64_t n2 = 0;
  for (uint64_t i = 0; i < stored; ++i, ++n2) {
    const auto q = Payload(Key(i, 4), kBlock);
    if (!t2->Put(Header(Key(i, 4), q), q).ok()) break;
    (void)t2->Pin(Key(i, 4), i == 0 ? std::chrono::milliseconds(50) : std::chrono::minutes(1));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(120));
  const auto q = Payload(Key(5000, 4), kBlock);
  st = t2->Put(Header(Key(5000, 4), q), q);
  ok = Expect(n2 == stored && st.ok() && !t2->Find(Key(0, 4)).ok(),
              "pins: an expired pin still protected its block: " + st.ToString()) &&
       ok;
  if (ok)
    Pass("pins: " + std::to_string(stored) +
         " pinned blocks fill 4 MiB -> NoSpace, no eviction; pinned Erase Unavailable; Unpin "
         "frees room; an expired pin stops protecting");
}

void CheckOpenErrors() {
  const int count = DeviceTier::DeviceCount();
  bool ok = Expect(count >= 1, "DeviceCount() is 0 on a GPU machine");
  for (int dev : {-1, count, 999}) {
    DeviceTierOptions o;
    o.device = dev;
    o.capacity_bytes = 16 << 20;
    auto t = DeviceTier::Open(o);
    ok = Expect(t.status().code() == StatusCode::kUnavailable,
                "Open(device " + std::to_string(dev) + "): want Unavailable, got " +
                    Code(t.status())) &&
         ok;
  }
  DeviceTierOptions o;
  o.pool.slab_bytes = 3 << 20;
  ok = Expect(DeviceTier::Open(o).status().code() == StatusCode::kInvalidArgument,
              "Open with a 3 MiB slab: want InvalidArgument") &&
       ok;
  o = DeviceTierOptions{};
  o.capacity_bytes = 1 << 20;
  ok = Expect(DeviceTier::Open(o).status().code() == StatusCode::kInvalidArgument,
              "Open with capacity below one slab: want InvalidArgument") &&
       ok;
  size_t free_b = 0, total_b = 0;
  (void)cudaMemGetInfo(&free_b, &total_b);
  o = DeviceTierOptions{};
  o.capacity_bytes = (uint64_t{total_b} + (uint64_t{64} << 30)) & ~((uint64_t{16} << 20) - 1);
  o.pool.max_blocks = 1024;
  auto big = DeviceTier::Open(o);
  (void)cudaGetLastError();  // the failed cudaMalloc is the runtime's last error: clear it
  ok = Expect(big.status().code() == StatusCode::kNoSpace,
              "Open larger than the card (" + std::to_string(o.capacity_bytes >> 30) +
                  " GiB): want NoSpace, got " + big.status().ToString()) &&
       ok;
  // The failed allocation leaves the device usable.
  o = DeviceTierOptions{};
  o.capacity_bytes = 16 << 20;
  auto after = DeviceTier::Open(o);
  const auto p = Payload(Key(1, 5), 4096);
  std::vector<std::byte> out(4096);
  ok = Expect(after.ok() && (*after)->Put(Header(Key(1, 5), p), p).ok() &&
                  (*after)->Get(Key(1, 5), out).ok() && out == p,
              "a tier opened after the failed allocation does not work") &&
       ok;
  if (ok)
    Pass("Open: devices -1, " + std::to_string(count) +
         ", 999 Unavailable; bad options "
         "InvalidArgument; " +
         std::to_string(o.capacity_bytes >> 20) + " MiB ok after a " +
         "larger-than-card request got NoSpace");
}

void CheckThreads() {
  DeviceTierOptions o;
  o.capacity_bytes = 64 << 20;
  o.pool.slab_bytes = 2 << 20;
  auto t = OpenOrFail(o, "threads");
  if (!t) return;
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (uint64_t th = 0; th < 4; ++th) {
    threads.emplace_back([&, th] {
      for (int round = 0; round < 4; ++round) {
        for (uint64_t i = 0; i < 48; ++i) {
          const BlockKey k = Key(i, 100 + th * 10 + round);
          const auto p = Payload(k, 65536 + 512 * i);
          if (!t->Put(Header(k, p), p).ok()) ++bad;
          std::vector<std::byte> out(p.size());
          auto g = t->Get(k, out);
          if (!g.ok() || out != p) ++bad;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  if (Expect(bad.load() == 0, "threads: " + std::to_string(bad.load()) + " failed put/get"))
    Pass("4 threads x 192 put+get of 64-88 KiB into a 64 MiB tier (evicting): all byte-exact");
}

// ---------------------------------------------------------------- bandwidth
struct PinnedHost {
  explicit PinnedHost(size_t n) {
    if (cudaHostAlloc(&p, n, cudaHostAllocDefault) != cudaSuccess) p = nullptr;
  }
  ~PinnedHost() { cudaFreeHost(p); }
  std::byte* b() const { return static_cast<std::byte*>(p); }
  void* p = nullptr;
};

template <typename Fn>
double MedianSeconds(int reps, Fn&& fn) {
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto a = std::chrono::steady_clock::now();
    fn(r);
    const auto b = std::chrono::steady_clock::now();
    t.push_back(std::chrono::duration<double>(b - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void Row(const std::string& name, double bytes, double t, const std::string& base, double tb) {
  const double v = bytes / t / 1e9, bv = bytes / tb / 1e9;
  std::printf("%-46s %8.2f GB/s   %-30s %8.2f GB/s   ratio %.3f\n", name.c_str(), v, base.c_str(),
              bv, v / bv);
}

void Bandwidth(size_t block, uint32_t n, int reps, bool pinned_host) {
  const size_t total = block * n;
  std::vector<std::byte> pageable_src, pageable_dst;
  std::unique_ptr<PinnedHost> pin_src, pin_dst;
  std::byte *src, *dst;
  if (pinned_host) {
    pin_src = std::make_unique<PinnedHost>(total);
    pin_dst = std::make_unique<PinnedHost>(total);
    if (!Expect(pin_src->p && pin_dst->p, "bandwidth: cudaHostAlloc failed")) return;
    src = pin_src->b();
    dst = pin_dst->b();
  } else {
    pageable_src.resize(total);
    pageable_dst.resize(total);
    src = pageable_src.data();
    dst = pageable_dst.data();
  }
  std::memset(dst, 0, total);  // first touch outside the timings
  std::vector<std::vector<BlockHeader>> headers(reps);
  for (uint32_t i = 0; i < n; ++i) Fill(src + i * block, block, Key(i, 7));
  for (int r = 0; r < reps; ++r)  // fresh keys per rep, same bytes (the checksum is of the bytes)
    for (uint32_t i = 0; i < n; ++i) {
      BlockHeader h = Header(Key(i, 7), {src + i * block, block});
      h.key = Key(i, 1000 + r);
      headers[r].push_back(h);
    }
  void* dev = nullptr;
  if (!Expect(cudaMalloc(&dev, total) == cudaSuccess, "bandwidth: cudaMalloc")) return;
  std::byte* d = static_cast<std::byte*>(dev);
  (void)cudaGetLastError();  // clears the error an earlier, expected, failed cudaMalloc left
  const std::string mem = pinned_host ? "pinned" : "pageable";
  const std::string tag = mem + "/" + std::to_string(block >> 10) + "KiB/n=" + std::to_string(n);
  (void)cudaMemcpy(d, src, total, cudaMemcpyHostToDevice);  // warm up
  const double t_h2d_blk = MedianSeconds(reps, [&](int) {
    for (uint32_t i = 0; i < n; ++i)
      (void)cudaMemcpy(d + i * block, src + i * block, block, cudaMemcpyHostToDevice);
  });
  const double t_d2h_blk = MedianSeconds(reps, [&](int) {
    for (uint32_t i = 0; i < n; ++i)
      (void)cudaMemcpy(dst + i * block, d + i * block, block, cudaMemcpyDeviceToHost);
  });
  const double t_h2d_one =
      MedianSeconds(reps, [&](int) { (void)cudaMemcpy(d, src, total, cudaMemcpyHostToDevice); });
  const double t_d2h_one =
      MedianSeconds(reps, [&](int) { (void)cudaMemcpy(dst, d, total, cudaMemcpyDeviceToHost); });
  cudaFree(dev);
  if (!Expect(cudaGetLastError() == cudaSuccess, "bandwidth: a baseline cudaMemcpy failed")) return;

  for (bool verify : {false, true}) {
    DeviceTierOptions o;
    o.capacity_bytes = std::max<uint64_t>(total + (total >> 2), uint64_t{64} << 20);
    o.capacity_bytes = (o.capacity_bytes + (16 << 20) - 1) & ~uint64_t{(16 << 20) - 1};
    o.pool.verify_on_put = verify;
    auto t = OpenOrFail(o, "bandwidth");
    if (!t) return;
    std::atomic<int> bad{0};
    // Warm-up batch (first use of the slabs), then timed batches of fresh keys.
    for (uint32_t i = 0; i < n; ++i) {
      BlockHeader h = headers[0][i];
      h.key = Key(i, 999);
      if (!t->Put(h, {src + i * block, block}).ok()) ++bad;
    }
    for (uint32_t i = 0; i < n; ++i) (void)t->Erase(Key(i, 999));
    std::vector<double> put_t, get_t;
    for (int r = 0; r < reps; ++r) {
      auto a = std::chrono::steady_clock::now();
      for (uint32_t i = 0; i < n; ++i)
        if (!t->Put(headers[r][i], {src + i * block, block}).ok()) ++bad;
      auto b = std::chrono::steady_clock::now();
      for (uint32_t i = 0; i < n; ++i)
        if (!t->Get(headers[r][i].key, {dst + i * block, block}).ok()) ++bad;
      auto c = std::chrono::steady_clock::now();
      put_t.push_back(std::chrono::duration<double>(b - a).count());
      get_t.push_back(std::chrono::duration<double>(c - b).count());
      if (r == 0 && std::memcmp(src, dst, total) != 0) ++bad;
      for (uint32_t i = 0; i < n; ++i) (void)t->Erase(headers[r][i].key);
    }
    if (!Expect(bad.load() == 0 && t->Stats().evictions == 0,
                "bandwidth " + tag + ": a put/get failed, bytes differ or the tier evicted"))
      return;
    std::sort(put_t.begin(), put_t.end());
    std::sort(get_t.begin(), get_t.end());
    const double tp = put_t[put_t.size() / 2], tg = get_t[get_t.size() / 2];
    const std::string v = verify ? "+verify" : "";
    Row("tier_put" + v + "/" + tag, total, tp, "cudaMemcpy_h2d per block", t_h2d_blk);
    Row("tier_put" + v + "/" + tag, total, tp, "cudaMemcpy_h2d one call", t_h2d_one);
    if (!verify) {
      Row("tier_get/" + tag, total, tg, "cudaMemcpy_d2h per block", t_d2h_blk);
      Row("tier_get/" + tag, total, tg, "cudaMemcpy_d2h one call", t_d2h_one);
    }
  }

  // The batch calls (what strata serve --device-pool uses): every block of the batch reserved or
  // read first, one cudaMemcpyAsync per block on the tier's stream, one cudaStreamSynchronize.
  DeviceTierOptions o;
  o.capacity_bytes = std::max<uint64_t>(total + (total >> 2), uint64_t{64} << 20);
  o.capacity_bytes = (o.capacity_bytes + (16 << 20) - 1) & ~uint64_t{(16 << 20) - 1};
  o.pool.verify_on_put = false;
  auto t = OpenOrFail(o, "bandwidth batch");
  if (!t) return;
  int bad = 0;
  std::vector<double> put_t, get_t;
  for (int r = -1; r < reps; ++r) {  // r = -1: warm-up (first use of the slabs), not timed
    std::vector<BatchPut> puts;
    std::vector<BatchGet> gets;
    for (uint32_t i = 0; i < n; ++i) {
      BlockHeader h = headers[r < 0 ? 0 : r][i];
      if (r < 0) h.key = Key(i, 999);
      puts.push_back({h, {src + i * block, block}, nullptr});
      gets.push_back({h.key, {dst + i * block, block}, {}, {}});
    }
    if (r == 0) std::memset(dst, 0, total);
    auto a = std::chrono::steady_clock::now();
    auto put = t->PutBatch(puts);
    auto b = std::chrono::steady_clock::now();
    Status got = t->GetBatch(gets);
    auto c = std::chrono::steady_clock::now();
    if (!put.ok() || *put != n || !got.ok()) ++bad;
    for (const BatchGet& g : gets) bad += g.status.ok() ? 0 : 1;
    if (r == 0 && std::memcmp(src, dst, total) != 0) ++bad;
    if (r >= 0) {
      put_t.push_back(std::chrono::duration<double>(b - a).count());
      get_t.push_back(std::chrono::duration<double>(c - b).count());
    }
    for (const BatchPut& p : puts) (void)t->Erase(p.header.key);
  }
  if (!Expect(bad == 0 && t->Stats().evictions == 0,
              "bandwidth batch " + tag + ": a batch failed, bytes differ or the tier evicted"))
    return;
  std::sort(put_t.begin(), put_t.end());
  std::sort(get_t.begin(), get_t.end());
  const double tp = put_t[put_t.size() / 2], tg = get_t[get_t.size() / 2];
  Row("tier_put_batch/" + tag, total, tp, "cudaMemcpy_h2d per block", t_h2d_blk);
  Row("tier_put_batch/" + tag, total, tp, "cudaMemcpy_h2d one call", t_h2d_one);
  Row("tier_get_batch/" + tag, total, tg, "cudaMemcpy_d2h per block", t_d2h_blk);
  Row("tier_get_batch/" + tag, total, tg, "cudaMemcpy_d2h one call", t_d2h_one);
}

}  // namespace
}  // namespace strata::store

int main(int argc, char** argv) {
  using namespace strata::store;
  bool quick = false;
  int reps = 9;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick")
      quick = true;
    else if (a == "--reps" && i + 1 < argc)
      reps = std::max(1, std::atoi(argv[++i]));
    else {
      std::printf("usage: %s [--quick] [--reps N (9)]\n", argv[0]);
      return 2;
    }
  }
  const int count = DeviceTier::DeviceCount();
  if (count == 0) {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    std::printf("FAIL  no CUDA device: %s\n", cudaGetErrorString(e));
    return 1;
  }
  cudaDeviceProp prop;
  (void)cudaGetDeviceProperties(&prop, 0);
  int driver = 0, runtime = 0;
  (void)cudaDriverGetVersion(&driver);
  (void)cudaRuntimeGetVersion(&runtime);
  std::printf(
      "# device tier check: %d device(s); device 0 %s, sm_%d%d, %.1f GiB; driver %d, runtime %d\n",
      count, prop.name, prop.major, prop.minor, prop.totalGlobalMem / 1073741824.0, driver,
      runtime);
  CheckRoundTrip();
  CheckEviction();
  CheckPins();
  CheckOpenErrors();
  CheckThreads();
  std::printf("# device tier correctness: %s (%d failure%s)\n",
              g_failures ? "FAILED" : "all passed", g_failures, g_failures == 1 ? "" : "s");
  if (!quick) {
    for (bool pinned : {false, true}) {
      Bandwidth(size_t{2} << 20, 128, reps, pinned);    // 2 MiB blocks (gpu_check's), 256 MiB
      Bandwidth(size_t{64} << 10, 1024, reps, pinned);  // 64 KiB blocks, 64 MiB
    }
  }
  return g_failures ? 1 : 0;
}
