// Command-line flags that describe a namespace (model, layout, codec, salt, key scheme), shared by
// every command that keys tokens. Defaults describe Llama-3.1-8B in bf16 on one rank.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "strata/namespace.h"

namespace strata::cli {

struct NamespaceFlags {
  std::string model = "meta-llama/Llama-3.1-8B-Instruct";
  std::string revision;
  std::string dtype = "bf16";
  bool mla = false;
  uint32_t layers = 32;
  uint32_t kv_heads = 8;
  uint32_t head_dim = 128;
  uint32_t block_size = 16;
  std::string codec = "none";
  std::string lora;
  std::string salt;
  std::string key_scheme = "strata";
  std::string hash_seed;

  void AddTo(CLI::App& cmd);
  // The validated namespace, or a Fail() with the reason.
  Namespace Build() const;
};

}  // namespace strata::cli
