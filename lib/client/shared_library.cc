// The one source of libstrata.so (lib/CMakeLists.txt, lib/client/meson.build): the library's
// code is the strata_core and strata_lib archives, linked whole; lib/strata.map says what it
// exports. Every public header is included, so building the library compiles each of them (the
// installed-tree consumers of tests/packaging compile them with nothing but <prefix>/include).
#include "strata/block_format.h"
#include "strata/block_key.h"
#include "strata/c.h"
#include "strata/client.h"
#include "strata/engine_keys.h"
#include "strata/key_chain.h"
#include "strata/namespace.h"
#include "strata/result.h"
#include "strata/status.h"
#include "strata/tier.h"
#include "strata/version.h"
