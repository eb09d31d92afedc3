// FunctionRef<R(Args...)>: a non-owning reference to a callable, as absl::FunctionRef; two words,
// never allocates. Use it for callbacks that do not outlive the call that receives them.
//
// Thread-safety: as the referenced callable. The callable must outlive the FunctionRef.
#pragma once

#include <type_traits>
#include <utility>

namespace strata::store {

template <typename Sig>
class FunctionRef;

template <typename R, typename... Args>
class FunctionRef<R(Args...)> {
 public:
  template <typename F, typename = std::enable_if_t<
                            !std::is_same_v<std::decay_t<F>, FunctionRef> &&
                            std::is_invocable_r_v<R, F&, Args...>>>
  FunctionRef(F&& f)  // NOLINT: implicit by design.
      : obj_(const_cast<void*>(static_cast<const void*>(&f))),
        call_([](void* obj, Args... args) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(obj))(std::forward<Args>(args)...);
        }) {}

  R operator()(Args... args) const { return call_(obj_, std::forward<Args>(args)...); }

 private:
  void* obj_;
  R (*call_)(void*, Args...);
};

}  // namespace strata::store
