#include "daemon/request_handler.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <variant>

#include <nlohmann/json.hpp>

#include "core/cross_memory.h"
#include "daemon/log.h"
#include "daemon/metrics.h"
#include "events/block_tag.h"
#include "strata/key_chain.h"
#include "strata/version.h"

namespace strata {
namespace {

template <typename... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <typename... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

// The store tag (events/block_tag.h) that makes the KV events of a block name it as its engine
// does.
std::string EventTag(const ipc::CommitEngineBlock& e) {
  if (e.secondary_shard) return events::SecondaryShardTag();
  events::BlockTag tag;
  tag.hash = e.block.hash;
  tag.parent = e.block.parent;
  tag.block_size = e.block_size;
  tag.token_ids = e.block.token_ids;
  tag.lora_name = e.lora_name;
  return events::EncodeBlockTag(tag);
}

// The payloads of `q` inside the client's staging memory, or in its own memory for a
// cross-memory commit. InvalidArgument for a range outside staging, or addresses from a client
// that did not permit cross-memory reads (the client chose the offsets and addresses: nothing of
// them is trusted; the node's reads of client memory fail cleanly on a bad address). A gathered
// block whose chunks all lie in a KV cache the caller shared is read through the daemon's mapping
// of it: `mapped` receives those chunks' addresses in this process.
Result<std::vector<Node::StagedBlock>> StagedBlocks(const ipc::StoreCommitRequest& q,
                                                    const Caller& caller,
                                                    std::vector<uint64_t>* mapped) {
  std::vector<Node::StagedBlock> out;
  out.reserve(q.keys.size());
  if (q.gather) {
    const ipc::CrossMemoryGather& g = *q.gather;
    const bool shared = caller.shared_kv != nullptr && !caller.shared_kv->empty();
    if (caller.cross_memory_pid <= 0 && !shared)
      return Status::InvalidArgument(
          "StoreCommit: a gather from a connection without cross-memory stores");
    const uint64_t cpb = g.chunks_per_block;
    // Each factor is bounded before multiplying: no overflow.
    if (cpb == 0 || cpb > 65536 || g.rows_per_chunk == 0 || g.rows_per_chunk > 65536 ||
        g.heads == 0 || g.heads > 4096 || g.row_bytes == 0 ||
        g.row_bytes > kCrossMemoryChunkBytes ||
        uint64_t{g.rows_per_chunk} * g.heads * g.row_bytes > kCrossMemoryChunkBytes ||
        g.chunk_addresses.size() % cpb != 0)
      return Status::InvalidArgument("StoreCommit: a malformed cross-memory gather");
    const uint64_t shard = cpb * g.rows_per_chunk * g.row_bytes;
    const size_t blocks = g.chunk_addresses.size() / cpb;
    // Per block: read through a share (every chunk in one), else with process_vm_readv.
    const uint64_t chunk_bytes = uint64_t{g.rows_per_chunk} * g.heads * g.row_bytes;
    std::vector<uint8_t> block_mapped(blocks, 0);
    if (shared) {
      mapped->resize(g.chunk_addresses.size());
      for (size_t b = 0; b < blocks; ++b) {
        bool all = true;
        for (uint64_t c = b * cpb; all && c < (b + 1) * cpb; ++c) {
          const std::byte* p = caller.shared_kv->Find(g.chunk_addresses[c], chunk_bytes);
          all = p != nullptr;
          (*mapped)[c] = reinterpret_cast<uint64_t>(p);
        }
        block_mapped[b] = all;
      }
    }
    for (size_t i = 0; i < q.keys.size(); ++i) {
      if (g.blocks[i] >= blocks || g.key_heads[i] >= g.heads || q.lengths[i] != shard)
        return Status::InvalidArgument("StoreCommit: gathered shard " + std::to_string(i) +
                                       " names block " + std::to_string(g.blocks[i]) + " of " +
                                       std::to_string(blocks) + ", head " +
                                       std::to_string(g.key_heads[i]) + " of " +
                                       std::to_string(g.heads) + ", " +
                                       std::to_string(q.lengths[i]) + " bytes of " +
                                       std::to_string(shard));
      const bool through_share = block_mapped[g.blocks[i]] != 0;
      if (!through_share && caller.cross_memory_pid <= 0)
        return Status::InvalidArgument("StoreCommit: gathered shard " + std::to_string(i) +
                                       " names chunks outside the connection's shared KV caches "
                                       "and the connection has no cross-memory stores");
      Node::StagedBlock b{q.keys[i], std::nullopt, {}, {}};
      Node::StagedBlock::ClientGather cg;
      cg.pid = caller.cross_memory_pid;
      cg.pidfd = caller.cross_memory_pidfd;
      cg.mapped = through_share;
      cg.chunks = std::span<const uint64_t>(through_share ? *mapped : g.chunk_addresses)
                      .subspan(g.blocks[i] * cpb, cpb);
      cg.rows = g.rows_per_chunk;
      cg.heads = g.heads;
      cg.head = g.key_heads[i];
      cg.row_bytes = g.row_bytes;
      b.client_gather = cg;
      if (q.parents[i] != BlockKey{}) b.parent = q.parents[i];
      if (!q.engine_blocks.empty()) b.tag = EventTag(q.engine_blocks[i]);
      out.push_back(std::move(b));
    }
    return out;
  }
  if (!q.source_addresses.empty()) {
    if (caller.cross_memory_pid <= 0)
      return Status::InvalidArgument(
          "StoreCommit: client addresses from a connection without cross-memory stores");
    for (size_t i = 0; i < q.keys.size(); ++i) {
      Node::StagedBlock b{q.keys[i], std::nullopt, {}, {}};
      b.client_memory = Node::ClientMemory{caller.cross_memory_pid, caller.cross_memory_pidfd,
                                           q.source_addresses[i], q.lengths[i]};
      if (q.parents[i] != BlockKey{}) b.parent = q.parents[i];
      if (!q.engine_blocks.empty()) b.tag = EventTag(q.engine_blocks[i]);
      out.push_back(std::move(b));
    }
    return out;
  }
  const std::span<const std::byte> staging = caller.staging;
  if (staging.empty())
    return Status::InvalidArgument("StoreCommit: this connection has no staging memory");
  for (size_t i = 0; i < q.keys.size(); ++i) {
    const uint64_t off = q.staging_offsets[i], len = q.lengths[i];
    if (off > staging.size() || len > staging.size() - off)
      return Status::InvalidArgument("StoreCommit: block " + q.keys[i].ToHex() + " at [" +
                                     std::to_string(off) + ", +" + std::to_string(len) +
                                     ") lies outside the " + std::to_string(staging.size()) +
                                     "-byte staging memory");
    Node::StagedBlock b{q.keys[i], std::nullopt, staging.subspan(off, len), {}};
    if (q.parents[i] != BlockKey{}) b.parent = q.parents[i];
    if (!q.engine_blocks.empty()) b.tag = EventTag(q.engine_blocks[i]);
    out.push_back(b);
  }
  return out;
}

ipc::Response Error(uint64_t id, Status status) {
  ipc::Response r;
  r.id = id;
  r.status = std::move(status);
  return r;
}

}  // namespace

ipc::Response RequestHandler::HandleHello(const ipc::Request& request, const ipc::Hello& hello) {
  if (hello.protocol_version != ipc::kIpcProtocolVersion)
    return Error(request.id,
                 Status::NotSupported(
                     "client speaks protocol " + std::to_string(hello.protocol_version) +
                     ", daemon speaks " + std::to_string(ipc::kIpcProtocolVersion) +
                     (hello.protocol_version < 4
                          ? " (clients before protocol 4 compute block keys without the "
                            "namespace tag, docs/keys.md): use a client library of this release"
                          : std::string())));
  ipc::Response r;
  r.id = request.id;
  ipc::HelloReply reply{ipc::kIpcProtocolVersion, node_->pool_bytes(), std::string(Version()),
                        node_->pool_slab_bytes()};
  reply.verify_loads = options_.verify_loads;
  r.body = std::move(reply);
  return r;
}

uint16_t RequestHandler::TenantOfSalt(const std::string& salt) const {
  const auto& salts = options_.private_salts;
  auto it = std::find(salts.begin(), salts.end(), salt);
  return it == salts.end() ? 0 : static_cast<uint16_t>(it - salts.begin() + 1);
}

Status RequestHandler::CheckNamespace(const NamespaceId& ns, const Caller& caller) const {
  if (options_.private_salts.empty()) return Status::OK();
  const uint16_t tenant = node_->NamespaceTenant(ns);
  if (tenant == Node::kUnknownTenant)
    return Status::PermissionDenied("namespace " + ns.ToHex() +
                                    " was not opened (OpenNamespace) by a client of its tenant");
  if (!caller.MayUse(tenant))
    return Status::PermissionDenied("namespace " + ns.ToHex() +
                                    " belongs to a tenant this client may not use");
  return Status::OK();
}

Status RequestHandler::CheckInspect(const ipc::InspectRequest& q, const Caller& caller) const {
  // A view of one namespace is for the clients of its tenant, as a Load of it would be. A spec
  // names the caller's namespace only if it fingerprints to the id asked about.
  if (options_.private_salts.empty()) return Status::OK();  // one tenant: nothing to hide
  if (q.spec) {
    if (!caller.MayUse(TenantOfSalt(q.spec->tenant_salt)))
      return Status::PermissionDenied("tenant '" + q.spec->tenant_salt +
                                      "' is not allowed for this client's credentials");
    auto ns = Namespace::Create(*q.spec);
    if (ns.ok() && q.ns && ns->id() != *q.ns)
      return Status::PermissionDenied("the namespace spec does not fingerprint to " +
                                      q.ns->ToHex());
    if (ns.ok() && q.ns) return Status::OK();
  }
  if (q.ns) return CheckNamespace(*q.ns, caller);
  return Status::OK();  // node-wide views: refused to non-admins by the node itself
}

ipc::Response RequestHandler::OpenNamespace(const ipc::Request& request,
                                            const ipc::OpenNamespaceRequest& q,
                                            const Caller& caller) {
  // The daemon fingerprints the encoding itself: the salt it reads is the one the id hashes.
  auto spec = DecodeNamespace(q.encoding);
  if (!spec.ok()) return Error(request.id, spec.status().WithContext("OpenNamespace"));
  auto ns = Namespace::Create(*spec);
  if (!ns.ok()) return Error(request.id, ns.status().WithContext("OpenNamespace"));
  if (ns->encoding() != q.encoding)
    return Error(request.id, Status::InvalidArgument(
                                 "OpenNamespace: not a canonical namespace encoding"));
  const uint16_t tenant = TenantOfSalt(spec->tenant_salt);
  if (!caller.MayUse(tenant))
    return Error(request.id,
                 Status::PermissionDenied("OpenNamespace: tenant '" + spec->tenant_salt +
                                          "' is not allowed for this client's credentials"));
  if (Status st = node_->SetNamespaceTenant(ns->id(), tenant); !st.ok())
    return Error(request.id, st.WithContext("OpenNamespace"));
  ipc::Response r;
  r.id = request.id;
  r.body = ipc::OpenNamespaceReply{ns->id()};
  return r;
}

Result<Node::PoolSlab> RequestHandler::MapSlab(const ipc::MapSlabRequest& request,
                                               const Caller& caller) {
  STRATA_ASSIGN_OR_RETURN(Node::PoolSlab slab, node_->OpenPoolSlab(request.slab));
  if (!caller.MayUse(slab.tenant)) {
    ::close(slab.fd);
    return Status::PermissionDenied("MapSlab: slab " + std::to_string(request.slab) +
                                    " holds blocks of a tenant this client may not use");
  }
  return slab;
}

Result<std::pair<Node::LoadIndexSegment, uint16_t>> RequestHandler::MapLoadIndex(
    const ipc::MapLoadIndexRequest& request, const Caller& caller) {
  STRATA_RETURN_IF_ERROR(CheckNamespace(request.ns, caller).WithContext("MapLoadIndex"));
  // The segment holds the keys of every namespace of the tenant: exactly what this caller could
  // ask Lookup and Load about.
  const uint16_t tenant = node_->NamespaceTenant(request.ns);
  if (tenant == Node::kUnknownTenant || !caller.MayUse(tenant))
    return Status::PermissionDenied("MapLoadIndex: namespace " + request.ns.ToHex() +
                                    " is not of a tenant this client may use");
  STRATA_ASSIGN_OR_RETURN(Node::LoadIndexSegment seg, node_->OpenLoadIndex(tenant));
  return std::make_pair(seg, tenant);
}

ipc::Response RequestHandler::Handle(Node::OwnerId owner, const ipc::Request& request,
                                     const Caller& caller) {
  const auto started = std::chrono::steady_clock::now();
  ipc::Response r;
  r.id = request.id;
  std::visit(
      Overloaded{
          [&](const ipc::Hello& h) { r = HandleHello(request, h); },
          [&](const ipc::LookupRequest& q) {
            if (q.ns) {
              if (r.status = CheckNamespace(*q.ns, caller); !r.status.ok()) return;
            }
            ipc::LookupReply reply;
            reply.tiers = node_->Lookup(q.keys, q.ns);
            reply.matched = static_cast<uint32_t>(reply.tiers.size());
            r.body = std::move(reply);
          },
          [&](const ipc::StoreBeginRequest& q) {
            if (r.status = CheckNamespace(q.ns, caller); !r.status.ok()) return;
            if (!q.sizes.empty() && q.sizes.size() != q.keys.size()) {
              r.status = Status::InvalidArgument("StoreBegin: keys and sizes differ in length");
              return;
            }
            if (r.status = CheckKeysInNamespace(q.keys, q.ns, "StoreBegin"); !r.status.ok())
              return;
            auto exists = node_->Exists(q.keys, q.sizes);
            if (!exists.ok()) r.status = exists.status().WithContext("Store");
            else r.body = ipc::StoreBeginReply{std::move(exists).value()};
          },
          [&](const ipc::StoreCommitRequest& q) {
            if (r.status = CheckNamespace(q.ns, caller); !r.status.ok()) return;
            std::vector<uint64_t> mapped;  // the chunks' addresses in the daemon's shares
            auto blocks = StagedBlocks(q, caller, &mapped);
            if (!blocks.ok()) {
              r.status = blocks.status();
              return;
            }
            // The description of the namespace (its connection's first commit of it), for the
            // inspector; a spec that does not fingerprint to q.ns is counted, never trusted.
            if (q.spec) (void)node_->DescribeNamespace(q.ns, *q.spec);
            auto n = node_->Store(q.ns, q.codec, *blocks);
            if (!n.ok()) {
              r.status = n.status();
              return;
            }
            r.body = ipc::StoreCommitReply{n->committed, n->existed};
            uint64_t bytes = 0;
            for (uint64_t len : q.lengths) bytes += len;
            metrics::Requests().store_bytes.fetch_add(bytes, std::memory_order_relaxed);
          },
          [&](const ipc::LoadRequest& q) {
            if (r.status = CheckNamespace(q.ns, caller); !r.status.ok()) return;
            // 0 asks for the node's default; anything else is capped.
            const uint32_t pin_ms = std::min(q.pin_ms, options_.max_pin_ms);
            if (q.recompute_tokens_per_second > 0)
              node_->ReportRecomputeRate(q.ns, q.recompute_tokens_per_second);
            auto locs = node_->PinForLoad(owner, q.ns, q.keys, pin_ms);
            if (!locs.ok()) {
              r.status = locs.status();
              return;
            }
            uint64_t bytes = 0;
            for (const ipc::Location& l : *locs) bytes += l.length;
            metrics::Requests().load_bytes.fetch_add(bytes, std::memory_order_relaxed);
            r.body = ipc::LoadReply{std::move(locs).value()};
          },
          [&](const ipc::UnpinRequest& q) {
            node_->Unpin(owner, q.keys);
            r.body = ipc::UnpinReply{};
          },
          [&](const ipc::PrefetchRequest& q) { r.body = ipc::PrefetchReply{node_->Prefetch(q.keys)}; },
          [&](const ipc::StatsRequest&) {
            if (caller.admin) {
              r.body = ipc::StatsReply{node_->StatsJson()};
              return;
            }
            // Node-wide counters describe other tenants' traffic: a non-admin sees the pool.
            nlohmann::json j = {{"scope", "restricted"}, {"pool_bytes", node_->pool_bytes()}};
            r.body = ipc::StatsReply{j.dump()};
          },
          [&](const ipc::ClearRequest& q) {
            if (!q.ns && !caller.admin) {
              r.status = Status::PermissionDenied(
                  "Clear of every namespace is for admin users; name a namespace");
              return;
            }
            if (q.ns && !caller.admin) {
              if (r.status = CheckNamespace(*q.ns, caller); !r.status.ok()) return;
            }
            r.body = ipc::ClearReply{node_->Clear(q.ns)};
          },
          [&](const ipc::OpenNamespaceRequest& q) { r = OpenNamespace(request, q, caller); },
          [&](const ipc::MapSlabRequest&) {
            // The session answers it: its reply carries a descriptor.
            r.status = Status::NotSupported("MapSlab: not over this channel");
          },
          [&](const ipc::MapLoadIndexRequest&) {
            r.status = Status::NotSupported("MapLoadIndex: not over this channel");
          },
          [&](const ipc::ShareKvRequest&) {
            // The session answers them: a share is a mapping of that session's.
            r.status = Status::NotSupported("ShareKv: not over this channel");
          },
          [&](const ipc::UnshareKvRequest&) {
            r.status = Status::NotSupported("UnshareKv: not over this channel");
          },
          [&](const ipc::AccessNotice& q) {
            // No reply goes back (the session drops it); a refused notice only goes unrecorded.
            if (r.status = CheckNamespace(q.ns, caller); !r.status.ok()) return;
            (void)node_->NoteAccess(q);
            r.body = std::monostate{};
          },
          [&](const ipc::InspectRequest& q) {
            if (!caller.admin) {
              if (Status st = CheckInspect(q, caller); !st.ok()) {
                r.status = st.WithContext("inspect " + q.command);
                return;
              }
            }
            auto json = node_->Inspect(q, caller.admin);
            if (!json.ok()) r.status = json.status();
            else r.body = ipc::InspectReply{std::move(json).value()};
          },
      },
      request.body);
  // Every request is timed by type (metrics.h: the Request enum follows RequestBody's order;
  // types past kInspect are counted as kOther).
  metrics::RequestMetrics& m = metrics::Requests();
  const size_t kind =
      std::min(request.body.index(), static_cast<size_t>(metrics::Request::kOther));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  m.latency[kind].Observe(seconds);
  if (!r.status.ok()) m.errors[kind].fetch_add(1, std::memory_order_relaxed);
  const std::string_view name = metrics::RequestName(static_cast<metrics::Request>(kind));
  if (!r.status.ok()) {
    // A client can repeat a failing request at request rate: one line per type per second.
    log::WarnLimited(name, "request_failed",
                     {{"request", std::string(name)}, {"id", std::to_string(request.id)},
                      {"error", r.status.ToString()}});
  } else if (log::Enabled(log::Level::kDebug)) {
    log::Write(log::Level::kDebug, "request",
               {{"request", std::string(name)}, {"id", std::to_string(request.id)},
                {"us", std::to_string(static_cast<uint64_t>(seconds * 1e6))}});
  }
  return r;
}

}  // namespace strata
