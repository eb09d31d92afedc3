# Warnings and sanitizers, applied to every Strata target through strata_project_options.
add_library(strata_project_options INTERFACE)
target_compile_options(strata_project_options INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wno-unused-parameter>)

if(NOT STRATA_SANITIZER STREQUAL "none")
  if(STRATA_SANITIZER STREQUAL "address")
    set(_san -fsanitize=address -fno-omit-frame-pointer)
  elseif(STRATA_SANITIZER STREQUAL "undefined")
    set(_san -fsanitize=undefined -fno-sanitize-recover=undefined)
  elseif(STRATA_SANITIZER STREQUAL "thread")
    set(_san -fsanitize=thread)
  else()
    message(FATAL_ERROR "STRATA_SANITIZER must be none, address, undefined or thread, not '${STRATA_SANITIZER}'")
  endif()
  target_compile_options(strata_project_options INTERFACE $<$<COMPILE_LANGUAGE:C,CXX>:${_san}>)
  target_link_options(strata_project_options INTERFACE ${_san})
endif()
