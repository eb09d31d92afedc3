#include "strata/version.h"

#ifndef STRATA_VERSION_STRING
#error "STRATA_VERSION_STRING must be defined by the build"
#endif

namespace strata {

std::string_view Version() { return STRATA_VERSION_STRING; }

}  // namespace strata
