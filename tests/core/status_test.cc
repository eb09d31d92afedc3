#include "strata/status.h"

#include <catch2/catch.hpp>

#include "strata/result.h"

namespace strata {
namespace {

Result<int> Half(int x) {
  if (x % 2) return Status::InvalidArgument("odd");
  return x / 2;
}

Status Quarter(int x, int* out) {
  STRATA_ASSIGN_OR_RETURN(int h, Half(x));
  STRATA_ASSIGN_OR_RETURN(int q, Half(h));
  *out = q;
  return Status::OK();
}

TEST_CASE("Status codes, messages and context", "[core]") {
  Status ok;
  CHECK(ok.ok());
  CHECK(ok.ToString() == "OK");
  Status nf = Status::NotFound("key abc");
  CHECK_FALSE(nf.ok());
  CHECK(nf.IsNotFound());
  CHECK(nf.ToString() == "NotFound: key abc");
  CHECK(nf.WithContext("disk tier").ToString() == "NotFound: disk tier: key abc");
  Status copy = nf;
  CHECK(copy.ToString() == nf.ToString());
  CHECK(Status::InProgress().IsInProgress());
  CHECK_FALSE(Status::InProgress().ok());
  CHECK(Status(StatusCode::kOk, "ignored").ok());
}

TEST_CASE("Result carries a value or a non-OK status", "[core]") {
  auto r = Half(8);
  REQUIRE(r.ok());
  CHECK(*r == 4);
  auto bad = Half(3);
  CHECK_FALSE(bad.ok());
  CHECK(bad.status().IsInvalidArgument());
  Result<int> from_ok = Status::OK();
  CHECK_FALSE(from_ok.ok());
  CHECK(from_ok.status().code() == StatusCode::kInternal);

  int q = -1;
  CHECK(Quarter(8, &q).ok());
  CHECK(q == 2);
  q = -1;
  CHECK(Quarter(6, &q).IsInvalidArgument());
  CHECK(q == -1);  // outputs are set only on success
}

}  // namespace
}  // namespace strata
