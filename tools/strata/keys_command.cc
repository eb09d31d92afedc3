// `strata keys`: prints the block keys of a token file, one per full block.
#include <filesystem>
#include <iostream>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "command_registry.h"
#include "namespace_flags.h"
#include "strata/key_chain.h"
#include "token_file.h"

namespace strata::cli {
namespace {

struct KeysOptions {
  std::string tokens_path;
  bool json = false;
  NamespaceFlags ns;
};

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
  std::vector<BlockKey> keys = ComputeBlockKeys(ns, *tokens);
  const size_t partial = tokens->size() - keys.size() * ns.block_size();
  if (opt.json) {
    nlohmann::json out;
    out["namespace"] = ns.id().ToHex();
    out["block_size"] = ns.block_size();
    out["tokens"] = tokens->size();
    out["unkeyed_tail_tokens"] = partial;
    auto& arr = out["keys"] = nlohmann::json::array();
    for (const auto& k : keys) arr.push_back(k.ToHex());
    std::cout << out.dump() << "\n";
    return;
  }
  std::cout << fmt::format("# namespace {} block_size {} tokens {} blocks {} unkeyed_tail {}\n",
                           ns.id().ToHex(), ns.block_size(), tokens->size(), keys.size(), partial);
  for (size_t i = 0; i < keys.size(); ++i)
    std::cout << fmt::format("{}\t{}\n", i, keys[i].ToHex());
}

[[maybe_unused]] const bool kRegistered = RegisterCommand("", [](CLI::App& parent) {
  auto opt = std::make_shared<KeysOptions>();
  auto* cmd = parent.add_subcommand("keys", "Print the block keys of a token file");
  cmd->add_option("--tokens", opt->tokens_path,
                  "Token file: integers separated by whitespace or commas ('-' for stdin)")
      ->required();
  cmd->add_flag("--json", opt->json, "Print one JSON object");
  opt->ns.AddTo(*cmd);
  cmd->callback([opt] { RunKeys(*opt); });
});

}  // namespace
}  // namespace strata::cli
