// Enum settings of the client (lib/client/enum_setting.h): the variable overrides the field, every
// spelling of the table is accepted, and a refusal names where the bad value came from; and the
// settings of the client (STRATA_STORE_PATH, STRATA_KV_HUGE_PAGES, STRATA_KV_SHARE,
// STRATA_LOAD_INDEX) are checked when a client is made.
#include <cstdlib>
#include <string>

#include <catch2/catch.hpp>

#include "lib/client/enum_setting.h"
#include "strata/client.h"

namespace strata {
namespace {

enum class Colour { kRed, kGreen, kBlue };
constexpr EnumName<Colour> kColourNames[] = {
    {"red", Colour::kRed}, {"green", Colour::kGreen}, {"blue", Colour::kBlue},
    {"r", Colour::kRed}};  // a second spelling of red
constexpr EnumSetting<Colour> kColour{"STRATA_TEST_COLOUR", "TestOptions::colour", kColourNames};

// Sets (or with nullptr unsets) a variable for the scope.
struct ScopedEnv {
  std::string name;
  ScopedEnv(const char* n, const char* value) : name(n) {
    if (value == nullptr) ::unsetenv(n);
    else ::setenv(n, value, 1);
  }
  ~ScopedEnv() { ::unsetenv(name.c_str()); }
};

TEST_CASE("enum setting: the field's value unless the variable is set", "[lib]") {
  {
    ScopedEnv env("STRATA_TEST_COLOUR", nullptr);
    auto r = ResolveEnumSetting(kColour, Colour::kBlue);
    REQUIRE(r.ok());
    CHECK(*r == Colour::kBlue);
  }
  {
    ScopedEnv env("STRATA_TEST_COLOUR", "");  // empty: not set
    CHECK(*ResolveEnumSetting(kColour, Colour::kGreen) == Colour::kGreen);
  }
  {
    ScopedEnv env("STRATA_TEST_COLOUR", "green");
    CHECK(*ResolveEnumSetting(kColour, Colour::kBlue) == Colour::kGreen);
  }
  {
    ScopedEnv env("STRATA_TEST_COLOUR", "r");  // every spelling of the table
    CHECK(*ResolveEnumSetting(kColour, Colour::kBlue) == Colour::kRed);
  }
}

TEST_CASE("enum setting: a bad value is refused, naming its source and the accepted names",
          "[lib]") {
  {
    ScopedEnv env("STRATA_TEST_COLOUR", "Green");  // names are exact
    auto r = ResolveEnumSetting(kColour, Colour::kBlue);
    REQUIRE(!r.ok());
    CHECK(r.status().IsInvalidArgument());
    CHECK(r.status().message() ==
          "environment STRATA_TEST_COLOUR='Green': expected red, green or blue");
  }
  {
    ScopedEnv env("STRATA_TEST_COLOUR", nullptr);
    auto r = ResolveEnumSetting(kColour, static_cast<Colour>(7));  // a cast from a C caller
    REQUIRE(!r.ok());
    CHECK(r.status().IsInvalidArgument());
    CHECK(r.status().message() == "TestOptions::colour = 7: expected red, green or blue");
  }
  {
    // A setting without a field: its default is checked against the table too.
    constexpr EnumSetting<Colour> no_field{"STRATA_TEST_COLOUR", "", kColourNames};
    ScopedEnv env("STRATA_TEST_COLOUR", nullptr);
    auto r = ResolveEnumSetting(no_field, static_cast<Colour>(9));
    REQUIRE(!r.ok());
    CHECK(r.status().message() == "the default of STRATA_TEST_COLOUR = 9: expected red, green or blue");
  }
}

// The client's four settings go through it: each refused at Connect/Embedded with its name.
TEST_CASE("enum setting: the client's settings are checked when it is made", "[lib]") {
  const EmbeddedOptions pool{64ull << 20, "", 0, "lru"};
  for (const char* var :
       {"STRATA_STORE_PATH", "STRATA_KV_HUGE_PAGES", "STRATA_KV_SHARE", "STRATA_LOAD_INDEX"}) {
    INFO(var);
    {
      ScopedEnv env(var, "sometimes");
      auto bad = Client::Embedded(pool);
      REQUIRE(!bad.ok());
      CHECK(bad.status().IsInvalidArgument());
      CHECK(bad.status().message().find(std::string("environment ") + var + "='sometimes'") !=
            std::string::npos);
    }
  }
  {
    ScopedEnv env("STRATA_LOAD_INDEX", "0");  // the spellings documented in docs/config.md
    CHECK(Client::Embedded(pool).ok());
  }
  {
    ClientOptions options;
    options.store_path = static_cast<ClientOptions::StorePath>(5);
    auto bad = Client::Embedded(pool, options);
    REQUIRE(!bad.ok());
    CHECK(bad.status().message().find("ClientOptions::store_path = 5") != std::string::npos);
  }
}

}  // namespace
}  // namespace strata
