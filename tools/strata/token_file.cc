#include "token_file.h"

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

namespace strata::cli {

Result<std::vector<uint32_t>> ParseTokens(std::string_view text) {
  std::vector<uint32_t> tokens;
  size_t line = 1, line_start = 0, i = 0;
  auto is_sep = [](char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ',' || c == '[' || c == ']';
  };
  while (i < text.size()) {
    char c = text[i];
    if (c == '\n') {
      ++line;
      line_start = i + 1;
    }
    if (is_sep(c)) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < text.size() && !is_sep(text[end])) ++end;
    std::string_view word = text.substr(i, end - i);
    uint32_t value = 0;
    auto [ptr, ec] = std::from_chars(word.data(), word.data() + word.size(), value, 10);
    if (ec != std::errc() || ptr != word.data() + word.size()) {
      std::ostringstream msg;
      msg << "token file line " << line << " column " << (i - line_start + 1) << ": '"
          << word.substr(0, 32) << "' is not a token id in [0, 4294967295]";
      return Status::InvalidArgument(msg.str());
    }
    tokens.push_back(value);
    i = end;
  }
  return tokens;
}

Result<std::vector<uint32_t>> ReadTokenFile(const std::string& path) {
  std::string text;
  if (path == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else {
    std::ifstream in(path, std::ios::binary);
    if (!in) return Status::IOError("cannot open token file '" + path + "': " + std::strerror(errno));
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (in.bad()) return Status::IOError("error reading token file '" + path + "'");
  }
  auto tokens = ParseTokens(text);
  if (!tokens.ok()) return tokens.status().WithContext(path);
  return tokens;
}

}  // namespace strata::cli
