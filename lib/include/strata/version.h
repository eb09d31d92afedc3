// Build and format versions of this Strata build.
#pragma once

#include <string_view>

namespace strata {

// Semantic version of the Strata build, e.g. "0.1.0".
std::string_view Version();

}  // namespace strata
