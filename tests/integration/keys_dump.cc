// Prints the block keys of a token file, one hex key per line: the Meson-built side of the
// CMake-vs-Meson key test (keys_cross_build_test.sh). Depends on lib/core only, so the Meson build
// for the test stays small.
// Usage: keys_dump TOKENS BLOCK_SIZE MODEL DTYPE MLA LAYERS KV_HEADS HEAD_DIM RANK WORLD CODEC LORA
//        SALT   (empty strings as "")
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "strata/key_chain.h"

int main(int argc, char** argv) {
  if (argc != 12) {
    std::cerr << "usage: keys_dump TOKENS BLOCK_SIZE MODEL DTYPE MLA LAYERS KV_HEADS HEAD_DIM "
                 "CODEC LORA SALT\n";
    return 2;
  }
  std::ifstream in(argv[1]);
  std::stringstream text;
  text << in.rdbuf();
  std::string s = text.str();
  for (char& c : s)
    if (c == ',' || c == '[' || c == ']') c = ' ';
  std::istringstream words(s);
  std::vector<uint32_t> tokens;
  for (unsigned long t; words >> t;) tokens.push_back(static_cast<uint32_t>(t));

  strata::NamespaceSpec spec;
  spec.block_size = std::stoul(argv[2]);
  spec.model_id = argv[3];
  auto dtype = strata::ParseKvDtype(argv[4]);
  auto codec = strata::ParseCodec(argv[9]);
  if (!dtype.ok() || !codec.ok()) return 2;
  spec.kv_dtype = *dtype;
  spec.attention = std::string(argv[5]) == "1" ? strata::AttentionKind::kMla
                                               : strata::AttentionKind::kKeyValue;
  spec.num_layers = std::stoul(argv[6]);
  spec.num_kv_heads = std::stoul(argv[7]);
  spec.head_dim = std::stoul(argv[8]);
  spec.codec = *codec;
  spec.lora_id = argv[10];
  spec.tenant_salt = argv[11];
  auto ns = strata::Namespace::Create(spec);
  if (!ns.ok()) {
    std::cerr << ns.status().ToString() << "\n";
    return 1;
  }
  for (const auto& k : strata::ComputeBlockKeys(*ns, tokens)) std::cout << k.ToHex() << "\n";
  return 0;
}
