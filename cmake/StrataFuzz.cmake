# libFuzzer targets for the message decoders (tests/lib, tests/transport).
#
# The targets are built with clang (ASan + UBSan + libFuzzer) as part of the ordinary build, so
# that the fuzz tests only run them for their bounded time: built at test time, a starved CI
# machine spent most of a test's timeout compiling. The project's own compiler (GCC) cannot build
# them, so each target is a custom command calling clang++ directly on the few sources it needs
# (no Strata library is linked: the decoders are pure functions of their bytes).
#
# STRATA_FUZZ_CLANGXX is the clang++ that builds them, or empty when this machine has no clang
# with libFuzzer (deploy/install-deps.sh installs one); the tests then report themselves skipped.

find_program(STRATA_FUZZ_CLANGXX_PROGRAM NAMES clang++ clang++-16 clang++-15 clang++-14)
set(STRATA_FUZZ_CLANGXX "")
if(STRATA_FUZZ_CLANGXX_PROGRAM)
  set(_probe_dir ${CMAKE_BINARY_DIR}/CMakeFiles/strata_fuzz_probe)
  file(MAKE_DIRECTORY ${_probe_dir})
  file(WRITE ${_probe_dir}/probe.cc
    "#include <cstddef>\n#include <cstdint>\n"
    "extern \"C\" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }\n")
  execute_process(
    COMMAND ${STRATA_FUZZ_CLANGXX_PROGRAM} -std=c++20 -fsanitize=fuzzer,address,undefined
            ${_probe_dir}/probe.cc -o ${_probe_dir}/probe
    RESULT_VARIABLE _probe_rc OUTPUT_QUIET ERROR_VARIABLE _probe_err)
  if(_probe_rc EQUAL 0)
    set(STRATA_FUZZ_CLANGXX ${STRATA_FUZZ_CLANGXX_PROGRAM})
  else()
    message(STATUS "Fuzz targets: ${STRATA_FUZZ_CLANGXX_PROGRAM} cannot link libFuzzer; "
                   "the fuzz tests will be skipped")
  endif()
else()
  message(STATUS "Fuzz targets: no clang++; the fuzz tests will be skipped")
endif()

# strata_add_fuzz_target(NAME <name> SOURCES <files...> INCLUDES <dirs...> LIBS <-lx...>
#                        DEPENDS <cmake targets...> MAX_LEN <bytes> SECONDS <s>)
# Builds ${CMAKE_BINARY_DIR}/fuzz/<name>/fuzz (the libFuzzer binary) and .../seed_writer (the same
# sources with STRATA_FUZZ_SEED_WRITER: writes one valid message of each kind into a directory),
# and registers the ctest <name> that runs the target for SECONDS from those seeds
# (tests/run_fuzz_target.sh). DEPENDS names the targets whose generated sources it compiles.
function(strata_add_fuzz_target)
  cmake_parse_arguments(F "" "NAME;MAX_LEN;SECONDS" "SOURCES;INCLUDES;LIBS;DEPENDS" ${ARGN})
  set(_out ${CMAKE_BINARY_DIR}/fuzz/${F_NAME})
  if(STRATA_FUZZ_CLANGXX)
    set(_inc "")
    set(_headers "")
    foreach(_d IN LISTS F_INCLUDES)
      list(APPEND _inc -I${_d})
      file(GLOB _h ${_d}/*.h)  # rebuild when a header beside the sources changes
      list(APPEND _headers ${_h})
    endforeach()
    add_custom_command(
      OUTPUT ${_out}/fuzz ${_out}/seed_writer
      COMMAND ${CMAKE_COMMAND} -E make_directory ${_out}
      COMMAND ${STRATA_FUZZ_CLANGXX} -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined
              -fno-sanitize-recover=undefined ${_inc} ${F_SOURCES} ${F_LIBS} -o ${_out}/fuzz
      COMMAND ${STRATA_FUZZ_CLANGXX} -std=c++20 -O1 -DSTRATA_FUZZ_SEED_WRITER ${_inc}
              ${F_SOURCES} ${F_LIBS} -o ${_out}/seed_writer
      DEPENDS ${F_SOURCES} ${_headers}
      COMMENT "Building libFuzzer target ${F_NAME} (clang, ASan+UBSan)"
      VERBATIM COMMAND_EXPAND_LISTS)
    add_custom_target(${F_NAME}_fuzz_target ALL DEPENDS ${_out}/fuzz ${_out}/seed_writer)
    if(F_DEPENDS)
      add_dependencies(${F_NAME}_fuzz_target ${F_DEPENDS})
    endif()
  endif()
  add_test(NAME ${F_NAME}
    COMMAND bash ${PROJECT_SOURCE_DIR}/tests/run_fuzz_target.sh ${_out} ${F_SECONDS} ${F_MAX_LEN})
  set_tests_properties(${F_NAME} PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77)
endfunction()
