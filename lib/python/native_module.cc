// The `strata` Python module (docs/client-api.md): the C++ client on torch tensors (any dtype,
// bf16 and fp8 included), numpy arrays and bytes-like objects, plus the paged API over an engine's
// per-layer KV tensors. Buffers are used in place; the GIL is released while bytes move.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "strata/client.h"
#include "strata/engine_keys.h"
#include "strata/key_chain.h"
#include "strata/version.h"

namespace py = pybind11;

namespace {

[[noreturn]] void Raise(const strata::Status& st) {
  switch (st.code()) {
    case strata::StatusCode::kInvalidArgument: throw py::value_error(st.ToString());
    case strata::StatusCode::kNotFound: throw py::key_error(st.ToString());
    case strata::StatusCode::kUnavailable:
    case strata::StatusCode::kIOError: throw std::runtime_error(st.ToString());
    default: throw std::runtime_error(st.ToString());
  }
}

template <typename T>
T Unwrap(strata::Result<T> r) {
  if (!r.ok()) Raise(r.status());
  return std::move(r).value();
}

void Check(const strata::Status& st) {
  if (!st.ok()) Raise(st);
}

// Keys arrive as a sequence of 16-byte bytes objects (what Namespace.keys returns).
std::vector<strata::BlockKey> ToKeys(const std::vector<py::bytes>& keys) {
  std::vector<strata::BlockKey> out;
  out.reserve(keys.size());
  for (const py::bytes& k : keys) {
    std::string_view v = k;
    if (v.size() != strata::BlockKey::kSize)
      throw py::value_error("a key is 16 bytes, got " + std::to_string(v.size()));
    out.push_back(strata::BlockKey::FromBytes(std::span<const std::byte, 16>(
        reinterpret_cast<const std::byte*>(v.data()), 16)));
  }
  return out;
}

py::bytes KeyBytes(const strata::BlockKey& k) {
  auto b = k.ToBytes();
  return py::bytes(reinterpret_cast<const char*>(b.data()), b.size());
}

// A contiguous byte range of a Python object, and the reference that keeps it alive.
struct RawBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  py::object owner;               // a torch tensor: the tensor itself (or its host copy)
  std::optional<py::buffer_info> info;  // a buffer-protocol object: its export
  py::object device_tensor;       // a CUDA tensor loaded through the host copy in `owner`
};

bool IsTorchTensor(const py::handle& obj) {
  return py::hasattr(obj, "data_ptr") && py::hasattr(obj, "element_size") &&
         py::hasattr(obj, "is_contiguous");
}

std::string TorchDeviceType(const py::handle& tensor) {
  return py::str(tensor.attr("device").attr("type")).cast<std::string>();
}

// A contiguous torch tensor's memory where it lives (host or device), through data_ptr().
RawBuffer TorchMemory(const py::handle& tensor) {
  if (!tensor.attr("is_contiguous")().cast<bool>())
    throw py::value_error("tensor is not contiguous (call .contiguous())");
  RawBuffer out;
  out.ptr = reinterpret_cast<void*>(tensor.attr("data_ptr")().cast<uintptr_t>());
  out.bytes =
      tensor.attr("numel")().cast<size_t>() * tensor.attr("element_size")().cast<size_t>();
  out.owner = py::reinterpret_borrow<py::object>(tensor);
  return out;
}

// Torch tensors of any dtype (bf16 and fp8 included: their memory is taken through data_ptr(),
// never through numpy, which has no such dtypes); anything else must speak the buffer protocol.
// A CUDA tensor (with `device_copies`) goes through a pinned host copy: made here for a store,
// copied back by CopyBackToDevices after a load. The paged API registers memory instead and
// takes host tensors only.
RawBuffer ExportOne(const py::handle& obj, bool writable, bool device_copies = false) {
  if (IsTorchTensor(obj)) {
    const std::string device = TorchDeviceType(obj);
    if (device != "cpu") {
      if (!obj.attr("is_contiguous")().cast<bool>())
        throw py::value_error("tensor is not contiguous (call .contiguous())");
      if (!device_copies || device != "cuda")
        throw py::value_error("a " + device + " tensor: only host and CUDA tensors are taken");
      py::object host = py::module_::import("torch").attr("empty_like")(
          obj, py::arg("device") = "cpu", py::arg("pin_memory") = true);
      if (!writable) host.attr("copy_")(obj);  // store: the device bytes, now on the host
      RawBuffer b = ExportOne(host, writable);
      if (writable) b.device_tensor = py::reinterpret_borrow<py::object>(obj);
      return b;
    }
    return TorchMemory(obj);
  }
  if (!py::isinstance<py::buffer>(obj))
    throw py::type_error("expected a torch tensor, a numpy array or a bytes-like object");
  RawBuffer out;
  py::buffer_info info = py::reinterpret_borrow<py::buffer>(obj).request(writable);
  if (info.ndim > 0) {
    py::ssize_t expect = info.itemsize;
    for (py::ssize_t d = info.ndim - 1; d >= 0; --d) {
      if (info.shape[d] != 1 && info.strides[d] != expect)
        throw py::value_error("buffer is not C-contiguous");
      expect *= info.shape[d];
    }
  }
  out.ptr = info.ptr;
  out.bytes = static_cast<size_t>(info.size * info.itemsize);
  out.info = std::move(info);
  return out;
}

// An engine hash from Python: 16 or 32 bytes, or their hex. `what` names it in errors.
strata::EngineHash ToEngineHash(const py::handle& h, const char* what) {
  std::optional<strata::EngineHash> e;
  if (py::isinstance<py::str>(h)) {
    e = strata::EngineHash::FromHex(h.cast<std::string>());
  } else if (py::isinstance<py::bytes>(h)) {
    const std::string raw = h.cast<std::string>();
    if (raw.size() == 16 || raw.size() == 32) {
      e.emplace();
      e->size = static_cast<uint8_t>(raw.size());
      std::memcpy(e->bytes.data(), raw.data(), raw.size());
    }
  }
  if (!e)
    throw py::value_error(std::string(what) +
                          ": an engine hash is 16 or 32 bytes, or 32 or 64 hex digits");
  return *e;
}

// engine_blocks=[(hash, parent_hash or None, token_ids or None), ...] (Namespace.engine_blocks).
std::vector<strata::EngineBlock> ToEngineBlocks(const std::optional<py::sequence>& seq) {
  std::vector<strata::EngineBlock> out;
  if (!seq) return out;
  out.reserve(py::len(*seq));
  for (const py::handle& item : *seq) {
    const py::tuple t = py::tuple(py::reinterpret_borrow<py::object>(item));
    if (t.size() != 3)
      throw py::value_error("an engine block is (hash, parent_hash or None, token_ids or None)");
    strata::EngineBlock b;
    b.hash = ToEngineHash(t[0], "engine block hash");
    if (!t[1].is_none()) b.parent = ToEngineHash(t[1], "engine block parent_hash");
    if (!t[2].is_none()) b.token_ids = t[2].cast<std::vector<uint32_t>>();
    out.push_back(std::move(b));
  }
  return out;
}

py::bytes HashBytes(const strata::EngineHash& h) {
  return py::bytes(reinterpret_cast<const char*>(h.bytes.data()), h.size);
}

struct HeldBuffers {
  std::vector<RawBuffer> buffers;  // keep the exports alive while bytes move
};

HeldBuffers Export(const py::sequence& buffers, bool writable) {
  HeldBuffers held;
  for (const py::handle& h : buffers)
    held.buffers.push_back(ExportOne(h, writable, /*device_copies=*/true));
  return held;
}

// After a load: the blocks that came back into host copies of CUDA tensors go to the devices.
void CopyBackToDevices(const HeldBuffers& held, size_t loaded) {
  for (size_t i = 0; i < loaded && i < held.buffers.size(); ++i)
    if (held.buffers[i].device_tensor) held.buffers[i].device_tensor.attr("copy_")(
        held.buffers[i].owner);
}

// A registered paged KV cache: its id and the tensors whose memory it points into.
struct PyKvCache {
  strata::KvCacheId id = 0;
  py::list tensors;
  int device = -1;  // CUDA device ordinal of the tensors, -1 for host tensors
};

// The memory of one layer tensor of a paged cache: a host tensor (or buffer) as ExportOne takes
// it, or a CUDA tensor's device memory in place (data_ptr and device index), which the client's
// CUDA data path gathers from and scatters into.
RawBuffer ExportLayer(const py::handle& obj, int* device) {
  *device = -1;
  if (IsTorchTensor(obj) && TorchDeviceType(obj) == "cuda") {
    RawBuffer out = TorchMemory(obj);
    py::object index = obj.attr("device").attr("index");
    *device = index.is_none()
                  ? py::module_::import("torch").attr("cuda").attr("current_device")().cast<int>()
                  : index.cast<int>();
    return out;
  }
  return ExportOne(obj, /*writable=*/true);
}

// Before the client reads or writes a CUDA cache's pages on its own stream: the work torch has
// queued on the device's current stream (the forward pass writing the pages, or reading them)
// completes first.
void SyncTorchStream(const PyKvCache& cache) {
  if (cache.device < 0) return;
  py::module_::import("torch").attr("cuda").attr("current_stream")(cache.device)
      .attr("synchronize")();
}

strata::Namespace MakeNamespace(const std::string& model_id, uint32_t num_layers,
                                uint32_t num_kv_heads, uint32_t head_dim, uint32_t block_size,
                                const std::string& kv_dtype, bool mla, const std::string& codec,
                                const std::string& lora_id, const std::string& tenant_salt,
                                const std::string& model_revision, const std::string& key_scheme,
                                const std::string& hash_seed) {
  strata::NamespaceSpec s;
  s.model_id = model_id;
  s.model_revision = model_revision;
  s.kv_dtype = Unwrap(strata::ParseKvDtype(kv_dtype));
  s.attention = mla ? strata::AttentionKind::kMla : strata::AttentionKind::kKeyValue;
  s.num_layers = num_layers;
  s.num_kv_heads = num_kv_heads;
  s.head_dim = head_dim;
  s.block_size = block_size;
  s.codec = Unwrap(strata::ParseCodec(codec));
  s.lora_id = lora_id;
  s.tenant_salt = tenant_salt;
  s.key_scheme = Unwrap(strata::ParseKeyScheme(key_scheme));
  s.hash_seed = hash_seed;
  return Unwrap(strata::Namespace::Create(std::move(s)));
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "Strata: a distributed prefix-cache tier for LLM serving (docs/client-api.md)";
  m.attr("__version__") = std::string(strata::Version());

  py::class_<strata::Namespace>(m, "Namespace")
      .def(py::init(&MakeNamespace), py::arg("model_id"), py::arg("num_layers"),
           py::arg("num_kv_heads"), py::arg("head_dim"), py::arg("block_size") = 16,
           py::arg("kv_dtype") = "bf16", py::arg("mla") = false, py::arg("codec") = "none",
           py::arg("lora_id") = "",
           py::arg("tenant_salt") = "", py::arg("model_revision") = "",
           py::arg("key_scheme") = "strata", py::arg("hash_seed") = "")
      .def_property_readonly("id", [](const strata::Namespace& ns) { return ns.id().ToHex(); })
      .def_property_readonly(
          "key_scheme",
          [](const strata::Namespace& ns) {
            return std::string(strata::KeySchemeName(ns.spec().key_scheme));
          })
      .def_property_readonly("hash_seed",
                             [](const strata::Namespace& ns) { return ns.spec().hash_seed; })
      .def_property_readonly("block_size", &strata::Namespace::block_size)
      .def_property_readonly("block_bytes", &strata::Namespace::block_bytes)
      .def(
          "keys",
          [](const strata::Namespace& ns, const std::vector<uint32_t>& tokens) {
            std::vector<py::bytes> out;
            for (const auto& k : strata::ComputeBlockKeys(ns, tokens)) out.push_back(KeyBytes(k));
            return out;
          },
          py::arg("tokens"), "Keys of every full block of `tokens` (16-byte bytes each).")
      .def(
          "engine_blocks",
          [](const strata::Namespace& ns, const std::vector<uint32_t>& tokens) {
            py::list out;
            for (const auto& b : Unwrap(strata::ComputeEngineBlocks(ns, tokens)))
              out.append(py::make_tuple(HashBytes(b.hash),
                                        b.parent.size ? py::object(HashBytes(b.parent))
                                                      : py::object(py::none()),
                                        b.token_ids));
            return out;
          },
          py::arg("tokens"),
          "What the engine publishes in its KV events for every full block of `tokens` (engine "
          "key schemes): [(hash, parent_hash or None, token_ids)], for store(engine_blocks=).")
      .def(
          "engine_keys",
          [](const strata::Namespace& ns, const py::list& hashes) {
            std::vector<py::bytes> out;
            out.reserve(hashes.size());
            for (const py::handle& h : hashes)
              out.push_back(
                  KeyBytes(strata::KeyOfEngineHash(ns.id(), ToEngineHash(h, "engine_keys"))));
            return out;
          },
          py::arg("hashes"),
          "Strata keys of blocks whose engine hashes (vLLM BlockHash bytes, SGLang hex page "
          "hashes) are given: XXH3-128(namespace id || hash), docs/keys.md.")
      .def(
          "fingerprint_differences",
          [](const strata::Namespace& ns, const strata::Namespace& other) {
            return strata::FingerprintDifferences(ns.spec(), other.spec());
          },
          py::arg("other"),
          "The fingerprint fields in which this namespace and `other` differ, as 'field: ours vs "
          "theirs' lines; empty when they agree.");

  py::class_<strata::LayerwiseStore>(m, "LayerwiseStore")
      .def(
          "store_layer",
          [](strata::LayerwiseStore& s, uint32_t layer) {
            // A CUDA cache's layer was written on torch's current stream: let it finish first.
            if (py::module_::import("sys").attr("modules").contains("torch")) {
              py::object cuda = py::module_::import("torch").attr("cuda");
              if (cuda.attr("is_initialized")().cast<bool>())
                cuda.attr("current_stream")().attr("synchronize")();
            }
            py::gil_scoped_release release;
            Check(s.StoreLayer(layer));
          },
          py::arg("layer"), "Gather layer `layer` of every block; its pages may be reused after.")
      .def(
          "finish",
          [](strata::LayerwiseStore& s) {
            py::gil_scoped_release release;
            return Unwrap(s.Finish().Wait());
          },
          "Encode and commit (blocks until done; the GIL is released); returns new head shards.");

  py::class_<strata::LayerwiseLoad>(m, "LayerwiseLoad")
      .def(
          "wait_layer",
          [](strata::LayerwiseLoad& l, uint32_t layer) {
            py::gil_scoped_release release;
            return Unwrap(l.WaitLayer(layer));
          },
          py::arg("layer"),
          "Block until layer `layer` is in the pages; returns how many leading blocks loaded.");

  py::class_<PyKvCache>(m, "KvCache")
      .def_readonly("id", &PyKvCache::id)
      .def_readonly("tensors", &PyKvCache::tensors)
      .def_readonly("device", &PyKvCache::device);

  py::class_<strata::Client>(m, "Client")
      .def_static(
          "connect",
          [](const std::string& socket) { return Unwrap(strata::Client::Connect(socket)); },
          py::arg("socket") = "", "Connect to a `strata serve` daemon.")
      .def_static(
          "embedded",
          [](uint64_t host_pool_bytes, const std::string& data_dir, bool verify_loads,
             const std::string& eviction_policy, uint64_t disk_bytes) {
            strata::EmbeddedOptions o;
            o.host_pool_bytes = host_pool_bytes;
            o.data_dir = data_dir;
            o.disk_bytes = disk_bytes;
            o.verify_loads = verify_loads;
            o.eviction_policy = eviction_policy;
            return Unwrap(strata::Client::Embedded(o));
          },
          py::arg("host_pool_bytes") = 256ull << 20, py::arg("data_dir") = "",
          py::arg("verify_loads") = false, py::arg("eviction_policy") = "",
          py::arg("disk_bytes") = 0,
          "An in-process cache (no daemon). disk_bytes: the disk tier's size under data_dir "
          "(EmbeddedOptions::disk_bytes; 0: 80% of the free space). verify_loads: loads hash every block against its "
          "checksum (EmbeddedOptions::verify_loads; STRATA_VERIFY_LOADS overrides it). "
          "eviction_policy: any policy `strata serve --eviction-policy` takes (\"learned\", "
          "\"prefix\", \"lru\", ...); \"\": the node's default (EmbeddedOptions::eviction_policy).")
      .def(
          "lookup",
          [](strata::Client& c, const std::vector<py::bytes>& keys) {
            auto k = ToKeys(keys);
            strata::LookupResult r;
            {
              py::gil_scoped_release release;
              r = Unwrap(c.Lookup(k));
            }
            std::vector<std::string> tiers;
            for (auto t : r.tiers) tiers.emplace_back(strata::TierName(t));
            return py::make_tuple(r.matched_blocks, tiers);
          },
          py::arg("keys"), "(matched blocks, tier of each) for the longest cached prefix.")
      .def(
          "store",
          [](strata::Client& c, const strata::Namespace& ns, const std::vector<py::bytes>& keys,
             const py::sequence& buffers, const std::optional<py::sequence>& engine_blocks) {
            auto k = ToKeys(keys);
            HeldBuffers held = Export(buffers, /*writable=*/false);
            std::vector<strata::ConstBuffer> in;
            for (auto& b : held.buffers) in.push_back({b.ptr, b.bytes});
            const auto engine = ToEngineBlocks(engine_blocks);
            py::gil_scoped_release release;
            return Unwrap(c.Store(ns, k, in, strata::StoreOptions{engine}).Wait());
          },
          py::arg("ns"), py::arg("keys"), py::arg("buffers"), py::arg("engine_blocks") = py::none(),
          "Store one buffer per key; returns how many blocks were new. engine_blocks: what the "
          "engine publishes for each block (Namespace.engine_blocks), for the KV events.")
      .def(
          "load",
          [](strata::Client& c, const strata::Namespace& ns, const std::vector<py::bytes>& keys,
             const py::sequence& buffers) {
            auto k = ToKeys(keys);
            HeldBuffers held = Export(buffers, /*writable=*/true);
            std::vector<strata::MutableBuffer> out;
            for (auto& b : held.buffers) out.push_back({b.ptr, b.bytes});
            size_t loaded;
            {
              py::gil_scoped_release release;
              loaded = Unwrap(c.Load(ns, k, out).Wait());
            }
            CopyBackToDevices(held, loaded);
            return loaded;
          },
          py::arg("ns"), py::arg("keys"), py::arg("buffers"),
          "Load the longest cached prefix into the buffers; returns how many blocks.")
      .def(
          "prefetch",
          [](strata::Client& c, const std::vector<py::bytes>& keys) {
            auto k = ToKeys(keys);
            py::gil_scoped_release release;
            return Unwrap(c.Prefetch(k).Wait());
          },
          py::arg("keys"))
      .def(
          "pin",
          [](strata::Client& c, const strata::Namespace& ns, const std::vector<py::bytes>& keys,
             uint32_t pin_ms) {
            auto k = ToKeys(keys);
            py::gil_scoped_release release;
            return Unwrap(c.Pin(ns, k, pin_ms));
          },
          py::arg("ns"), py::arg("keys"), py::arg("pin_ms") = 0)
      .def(
          "register_kv_cache",
          [](strata::Client& c, const strata::Namespace& ns, const py::sequence& layers,
             const std::string& layout, uint32_t tp_rank, uint32_t tp_size) {
            strata::KvCacheSpec spec;
            spec.layout = Unwrap(strata::ParseKvLayout(layout));
            spec.tp_rank = tp_rank;
            spec.tp_size = tp_size;
            PyKvCache out;
            size_t layer_bytes = 0;
            bool first = true;
            for (const py::handle& h : layers) {
              int device = -1;
              RawBuffer b = ExportLayer(h, &device);
              if (!first && device != out.device)
                throw py::value_error("every layer must be on the same device");
              out.device = device;
              first = false;
              if (layer_bytes != 0 && b.bytes != layer_bytes)
                throw py::value_error("every layer must have the same size");
              layer_bytes = b.bytes;
              spec.layers.push_back(b.ptr);
              out.tensors.append(h);
            }
            const auto& n = ns.spec();
            const bool mla = n.attention == strata::AttentionKind::kMla;
            const uint64_t heads = mla ? 1 : n.num_kv_heads / std::max(1u, tp_size);
            const uint64_t page = (mla ? 1 : 2) * uint64_t{n.block_size} * heads * n.head_dim *
                                  strata::KvDtypeSize(n.kv_dtype);
            if (page == 0 || layer_bytes % page != 0)
              throw py::value_error("a layer of " + std::to_string(layer_bytes) +
                                    " bytes is not a whole number of " + std::to_string(page) +
                                    "-byte pages of this namespace and tp_size");
            spec.num_blocks = static_cast<uint32_t>(layer_bytes / page);
            spec.device = out.device;
            out.id = Unwrap(c.RegisterKvCache(ns, spec));
            return out;
          },
          py::arg("ns"), py::arg("layers"), py::arg("layout") = "vllm", py::arg("tp_rank") = 0,
          py::arg("tp_size") = 1,
          "Register an engine's paged KV cache: one tensor per layer (e.g. vLLM's [2, num_blocks, "
          "block_size, kv_heads, head_dim]), host or CUDA tensors (all on one device); keep the "
          "returned KvCache while using it.")
      .def(
          "unregister_kv_cache",
          [](strata::Client& c, const PyKvCache& cache) {
            py::gil_scoped_release release;
            Check(c.UnregisterKvCache(cache.id));
          },
          py::arg("cache"),
          "Forget a registered cache (waits for a huge-page collapse piece in flight); its "
          "tensors may be freed afterwards, not before.")
      .def(
          "kv_cache_huge_pages",
          [](strata::Client& c, const PyKvCache& cache) {
            strata::KvCacheHugePages h;
            {
              py::gil_scoped_release release;
              h = Unwrap(c.HugePagesOf(cache.id));
            }
            py::dict d;
            d["cache_bytes"] = h.cache_bytes;
            d["advised_bytes"] = h.advised_bytes;
            d["collapsed_bytes"] = h.collapsed_bytes;
            d["collapsing"] = h.collapsing;
            d["in_huge_pages"] = h.in_huge_pages;
            return d;
          },
          py::arg("cache"),
          "How much of a host cache is in transparent huge pages (STRATA_KV_HUGE_PAGES): "
          "cache_bytes, advised_bytes, collapsed_bytes, collapsing, in_huge_pages.")
      .def(
          "store_paged",
          [](strata::Client& c, const PyKvCache& cache, const std::vector<py::bytes>& keys,
             const std::vector<int32_t>& block_ids,
             const std::optional<py::sequence>& engine_blocks) {
            auto k = ToKeys(keys);
            const auto engine = ToEngineBlocks(engine_blocks);
            SyncTorchStream(cache);
            py::gil_scoped_release release;
            return Unwrap(
                c.StorePaged(cache.id, k, block_ids, strata::StoreOptions{engine}).Wait());
          },
          py::arg("cache"), py::arg("keys"), py::arg("block_ids"),
          py::arg("engine_blocks") = py::none(),
          "Store pages block_ids[i] as keys[i]; returns how many head shards were new.")
      .def(
          "load_paged",
          [](strata::Client& c, const PyKvCache& cache, const std::vector<py::bytes>& keys,
             const std::vector<int32_t>& block_ids) {
            auto k = ToKeys(keys);
            SyncTorchStream(cache);  // nothing queued still reads the pages being overwritten
            py::gil_scoped_release release;
            return Unwrap(c.LoadPaged(cache.id, k, block_ids).Wait());
          },
          py::arg("cache"), py::arg("keys"), py::arg("block_ids"),
          "Load the longest loadable prefix into pages block_ids; returns how many blocks.")
      .def(
          "store_paged_layerwise",
          [](strata::Client& c, const PyKvCache& cache, const std::vector<py::bytes>& keys,
             const std::vector<int32_t>& block_ids,
             const std::optional<py::sequence>& engine_blocks) {
            auto k = ToKeys(keys);
            const auto engine = ToEngineBlocks(engine_blocks);
            SyncTorchStream(cache);
            py::gil_scoped_release release;
            return Unwrap(
                c.StorePagedLayerwise(cache.id, k, block_ids, strata::StoreOptions{engine}));
          },
          py::arg("cache"), py::arg("keys"), py::arg("block_ids"),
          py::arg("engine_blocks") = py::none(),
          "A paged store taken layer by layer: store_layer(i) for every layer, then finish().")
      .def(
          "load_paged_layerwise",
          [](strata::Client& c, const PyKvCache& cache, const std::vector<py::bytes>& keys,
             const std::vector<int32_t>& block_ids) {
            auto k = ToKeys(keys);
            SyncTorchStream(cache);
            py::gil_scoped_release release;
            return Unwrap(c.LoadPagedLayerwise(cache.id, k, block_ids));
          },
          py::arg("cache"), py::arg("keys"), py::arg("block_ids"),
          "A paged load completing layer by layer: wait_layer(i) returns the loaded prefix.")
      .def(
          "lookup_paged",
          [](strata::Client& c, const PyKvCache& cache, const std::vector<py::bytes>& keys) {
            auto k = ToKeys(keys);
            py::gil_scoped_release release;
            return Unwrap(c.LookupPaged(cache.id, k));
          },
          py::arg("cache"), py::arg("keys"),
          "How many leading blocks this rank can load now.")
      .def(
          "unpin",
          [](strata::Client& c, const std::vector<py::bytes>& keys) {
            auto k = ToKeys(keys);
            py::gil_scoped_release release;
            Check(c.Unpin(k));
          },
          py::arg("keys"))
      .def("stats",
           [](strata::Client& c) {
             std::string json = Unwrap(c.Stats());
             return py::module_::import("json").attr("loads")(json);
           })
      .def(
          "set_recompute_rate",
          [](strata::Client& c, const strata::Namespace& ns, double tokens_per_second) {
            Check(c.SetRecomputeRate(ns, tokens_per_second));
          },
          py::arg("ns"), py::arg("tokens_per_second"),
          "The engine's prefill rate for ns (tokens/s), sent with later loads of ns: "
          "`strata inspect funnel` counts the loads faster than recomputing.")
      .def(
          "clear",
          [](strata::Client& c, const strata::Namespace* ns) {
            std::optional<strata::NamespaceId> id;
            if (ns) id = ns->id();
            py::gil_scoped_release release;
            return Unwrap(c.Clear(id));
          },
          py::arg("ns") = nullptr);
}
