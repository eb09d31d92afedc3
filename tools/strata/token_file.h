// Reading token ids from text: integers separated by whitespace and/or commas; a surrounding
// JSON-style [ ] is accepted, so `[1, 2, 3]` and `1 2 3` read the same.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "strata/result.h"

namespace strata::cli {

// InvalidArgument with line and column on anything that is not a token id in [0, 2^32).
Result<std::vector<uint32_t>> ParseTokens(std::string_view text);

// Reads `path` ("-" for stdin) and parses it. IOError when the file cannot be read.
Result<std::vector<uint32_t>> ReadTokenFile(const std::string& path);

}  // namespace strata::cli
