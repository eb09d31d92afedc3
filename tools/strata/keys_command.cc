// `strata keys`: prints the block keys of a token file, one per full block, under any key scheme;
// for an engine scheme also the engine's own hash of each block, so an operator can check by hand
// that Strata and the engine agree (docs/keys.md, "Key schemes").
#include <filesystem>
#include <iostream>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "command_registry.h"
#include "namespace_flags.h"
#include "strata/engine_keys.h"
#include "strata/key_chain.h"
#include "token_file.h"

namespace strata::cli {
namespace {

struct KeysOptions {
  std::string tokens_path;
  bool json = false;
  std::vector<std::string> mm;  // IDENTIFIER:OFFSET:LENGTH
  NamespaceFlags ns;
};

MultimodalItem ParseMm(const std::string& arg) {
  const size_t b = arg.rfind(':');
  const size_t a = b == std::string::npos || b == 0 ? std::string::npos : arg.rfind(':', b - 1);
  if (a == std::string::npos || a == 0)
    Fail("--mm '" + arg + "': expected IDENTIFIER:OFFSET:LENGTH", 2);
  MultimodalItem item;
  item.identifier = arg.substr(0, a);
  try {
    size_t used = 0;
    const std::string off = arg.substr(a + 1, b - a - 1), len = arg.substr(b + 1);
    item.offset = std::stoull(off, &used);
    if (used != off.size() || off.empty() || off[0] == '-') throw std::invalid_argument(off);
    item.length = std::stoull(len, &used);
    if (used != len.size() || len.empty() || len[0] == '-') throw std::invalid_argument(len);
  } catch (const std::exception&) {
    Fail("--mm '" + arg + "': OFFSET and LENGTH must be non-negative integers", 2);
  }
  return item;
}

void RunKeys(const KeysOptions& opt) {
  if (opt.tokens_path != "-") {
    std::error_code ec;
    const auto status = std::filesystem::status(opt.tokens_path, ec);
    if (ec) Fail("--tokens '" + opt.tokens_path + "': " + ec.message(), 2);
    if (std::filesystem::is_directory(status))
      Fail("--tokens '" + opt.tokens_path + "' is a directory; expected a token file", 2);
  }
  auto tokens = ReadTokenFile(opt.tokens_path);
  if (!tokens.ok()) Fail(tokens.status().ToString());
  Namespace ns = opt.ns.Build();
  std::vector<MultimodalItem> mm;
  for (const auto& m : opt.mm) mm.push_back(ParseMm(m));
  auto computed = ComputeSchemeKeys(ns, *tokens, mm);
  if (!computed.ok()) Fail(computed.status().ToString(), 2);
  const std::vector<BlockKey>& keys = computed->keys;
  const bool engine = ns.spec().key_scheme != KeyScheme::kStrata;
  const size_t partial = tokens->size() - keys.size() * ns.block_size();
  const std::string scheme(KeySchemeName(ns.spec().key_scheme));
  if (opt.json) {
    nlohmann::json out;
    out["namespace"] = ns.id().ToHex();
    out["key_scheme"] = scheme;
    out["hash_seed"] = ns.spec().hash_seed;
    out["block_size"] = ns.block_size();
    out["tokens"] = tokens->size();
    out["unkeyed_tail_tokens"] = partial;
    auto& arr = out["keys"] = nlohmann::json::array();
    for (const auto& k : keys) arr.push_back(k.ToHex());
    if (engine) {
      const EngineHash root = EngineRootHash(ns);
      out["engine_root"] = root.size ? nlohmann::json(root.ToHex()) : nlohmann::json(nullptr);
      auto& hashes = out["engine_hashes"] = nlohmann::json::array();
      for (const auto& h : computed->hashes) hashes.push_back(h.ToHex());
    }
    std::cout << out.dump() << "\n";
    return;
  }
  std::cout << fmt::format(
      "# namespace {} key_scheme {} block_size {} tokens {} blocks {} unkeyed_tail {}\n",
      ns.id().ToHex(), scheme, ns.block_size(), tokens->size(), keys.size(), partial);
  if (engine) {
    const EngineHash root = EngineRootHash(ns);
    if (root.size)
      std::cout << fmt::format("# engine root {} (seed '{}')\n", root.ToHex(), ns.spec().hash_seed);
    std::cout << "# block\tengine_hash\tstrata_key\n";
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    if (engine)
      std::cout << fmt::format("{}\t{}\t{}\n", i, computed->hashes[i].ToHex(), keys[i].ToHex());
    else
      std::cout << fmt::format("{}\t{}\n", i, keys[i].ToHex());
  }
}

[[maybe_unused]] const bool kRegistered = RegisterCommand("", [](CLI::App& parent) {
  auto opt = std::make_shared<KeysOptions>();
  auto* cmd = parent.add_subcommand("keys", "Print the block keys of a token file");
  cmd->add_option("--tokens", opt->tokens_path,
                  "Token file: integers separated by whitespace or commas ('-' for stdin)")
      ->required();
  cmd->add_flag("--json", opt->json, "Print one JSON object");
  cmd->add_option("--mm", opt->mm,
                  "vLLM schemes: a multimodal item IDENTIFIER:OFFSET:LENGTH (its mm_hash and "
                  "placeholder positions); repeat in offset order");
  opt->ns.AddTo(*cmd);
  cmd->callback([opt] { RunKeys(*opt); });
});

}  // namespace
}  // namespace strata::cli
