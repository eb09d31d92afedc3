// The `strata` Python module (docs/client-api.md): the C++ client on numpy arrays, bytes-like
// objects and CPU torch tensors. Payload buffers are used in place (no copies besides the one
// into or out of the shared pool); the GIL is released while bytes move.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "strata/client.h"
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

// A CPU torch tensor shares its memory with tensor.numpy(); anything else must speak the buffer
// protocol already.
py::buffer AsBuffer(const py::handle& obj) {
  if (py::isinstance<py::buffer>(obj)) return py::reinterpret_borrow<py::buffer>(obj);
  if (py::hasattr(obj, "numpy") && py::hasattr(obj, "is_contiguous")) {
    if (py::hasattr(obj, "device") && py::str(obj.attr("device")).cast<std::string>() != "cpu")
      throw py::value_error("only CPU tensors can be stored or loaded (move it with .cpu())");
    if (!obj.attr("is_contiguous")().cast<bool>())
      throw py::value_error("tensor is not contiguous (call .contiguous())");
    return obj.attr("detach")().attr("numpy")();
  }
  throw py::type_error("expected a bytes-like object, a numpy array or a CPU torch tensor");
}

struct HeldBuffers {
  std::vector<py::buffer_info> infos;  // keep the exports alive while bytes move
};

HeldBuffers Export(const py::sequence& buffers, bool writable) {
  HeldBuffers held;
  for (const py::handle& h : buffers) {
    py::buffer b = AsBuffer(h);
    py::buffer_info info = b.request(writable);
    if (info.ndim > 0) {
      py::ssize_t expect = info.itemsize;
      for (py::ssize_t d = info.ndim - 1; d >= 0; --d) {
        if (info.shape[d] != 1 && info.strides[d] != expect)
          throw py::value_error("buffer is not C-contiguous");
        expect *= info.shape[d];
      }
    }
    held.infos.push_back(std::move(info));
  }
  return held;
}

size_t Bytes(const py::buffer_info& info) { return static_cast<size_t>(info.size * info.itemsize); }

strata::Namespace MakeNamespace(const std::string& model_id, uint32_t num_layers,
                                uint32_t num_kv_heads, uint32_t head_dim, uint32_t block_size,
                                const std::string& kv_dtype, bool mla, uint32_t rank,
                                uint32_t world_size, const std::string& codec,
                                const std::string& lora_id, const std::string& tenant_salt,
                                const std::string& model_revision) {
  strata::NamespaceSpec s;
  s.model_id = model_id;
  s.model_revision = model_revision;
  s.kv_dtype = Unwrap(strata::ParseKvDtype(kv_dtype));
  s.attention = mla ? strata::AttentionKind::kMla : strata::AttentionKind::kKeyValue;
  s.num_layers = num_layers;
  s.num_kv_heads = num_kv_heads;
  s.head_dim = head_dim;
  s.block_size = block_size;
  s.rank = rank;
  s.world_size = world_size;
  s.codec = Unwrap(strata::ParseCodec(codec));
  s.lora_id = lora_id;
  s.tenant_salt = tenant_salt;
  return Unwrap(strata::Namespace::Create(std::move(s)));
}

}  // namespace

PYBIND11_MODULE(strata, m) {
  m.doc() = "Strata: a distributed prefix-cache tier for LLM serving (docs/client-api.md)";
  m.attr("__version__") = std::string(strata::Version());

  py::class_<strata::Namespace>(m, "Namespace")
      .def(py::init(&MakeNamespace), py::arg("model_id"), py::arg("num_layers"),
           py::arg("num_kv_heads"), py::arg("head_dim"), py::arg("block_size") = 16,
           py::arg("kv_dtype") = "bf16", py::arg("mla") = false, py::arg("rank") = 0,
           py::arg("world_size") = 1, py::arg("codec") = "none", py::arg("lora_id") = "",
           py::arg("tenant_salt") = "", py::arg("model_revision") = "")
      .def_property_readonly("id", [](const strata::Namespace& ns) { return ns.id().ToHex(); })
      .def_property_readonly("block_size", &strata::Namespace::block_size)
      .def_property_readonly("block_bytes", &strata::Namespace::block_bytes)
      .def(
          "keys",
          [](const strata::Namespace& ns, const std::vector<uint32_t>& tokens) {
            std::vector<py::bytes> out;
            for (const auto& k : strata::ComputeBlockKeys(ns, tokens)) out.push_back(KeyBytes(k));
            return out;
          },
          py::arg("tokens"), "Keys of every full block of `tokens` (16-byte bytes each).");

  py::class_<strata::Client>(m, "Client")
      .def_static(
          "connect",
          [](const std::string& socket) { return Unwrap(strata::Client::Connect(socket)); },
          py::arg("socket") = "", "Connect to a `strata serve` daemon.")
      .def_static(
          "embedded",
          [](uint64_t host_pool_bytes, const std::string& data_dir) {
            strata::EmbeddedOptions o;
            o.host_pool_bytes = host_pool_bytes;
            o.data_dir = data_dir;
            return Unwrap(strata::Client::Embedded(o));
          },
          py::arg("host_pool_bytes") = 256ull << 20, py::arg("data_dir") = "",
          "An in-process cache (no daemon).")
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
            for (auto t : r.tiers) tiers.emplace_back(strata::BlockTierName(t));
            return py::make_tuple(r.matched_blocks, tiers);
          },
          py::arg("keys"), "(matched blocks, tier of each) for the longest cached prefix.")
      .def(
          "store",
          [](strata::Client& c, const strata::Namespace& ns, const std::vector<py::bytes>& keys,
             const py::sequence& buffers) {
            auto k = ToKeys(keys);
            HeldBuffers held = Export(buffers, /*writable=*/false);
            std::vector<strata::ConstBuffer> in;
            for (auto& info : held.infos) in.push_back({info.ptr, Bytes(info)});
            py::gil_scoped_release release;
            return Unwrap(c.Store(ns, k, in).Wait());
          },
          py::arg("ns"), py::arg("keys"), py::arg("buffers"),
          "Store one buffer per key; returns how many blocks were new.")
      .def(
          "load",
          [](strata::Client& c, const std::vector<py::bytes>& keys, const py::sequence& buffers) {
            auto k = ToKeys(keys);
            HeldBuffers held = Export(buffers, /*writable=*/true);
            std::vector<strata::MutableBuffer> out;
            for (auto& info : held.infos) out.push_back({info.ptr, Bytes(info)});
            py::gil_scoped_release release;
            return Unwrap(c.Load(k, out).Wait());
          },
          py::arg("keys"), py::arg("buffers"),
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
          [](strata::Client& c, const std::vector<py::bytes>& keys, uint32_t pin_ms) {
            auto k = ToKeys(keys);
            py::gil_scoped_release release;
            return Unwrap(c.Pin(k, pin_ms));
          },
          py::arg("keys"), py::arg("pin_ms") = 0)
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
          "clear",
          [](strata::Client& c, const strata::Namespace* ns) {
            std::optional<strata::NamespaceId> id;
            if (ns) id = ns->id();
            py::gil_scoped_release release;
            return Unwrap(c.Clear(id));
          },
          py::arg("ns") = nullptr);
}
