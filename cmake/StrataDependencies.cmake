# Every third-party dependency of Strata is found here, once, with its minimum version
# (the versions are Debian 12's, which deploy/install-deps.sh installs).
# Private dependencies stay private: only the folder that uses one links it.
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)

# xxHash >= 0.8 (XXH3 is stable from 0.8.0): keys and checksums, private to lib/core.
pkg_check_modules(XXHASH REQUIRED IMPORTED_TARGET libxxhash>=0.8.0)

# CLI11 >= 2.1: command-line parsing in tools/.
find_package(CLI11 2.1 REQUIRED CONFIG)
# fmt >= 9: formatting in tools/ and logs.
find_package(fmt 9 REQUIRED CONFIG)
# nlohmann_json >= 3.10: JSON output of the CLI and the trace reader.
find_package(nlohmann_json 3.10 REQUIRED CONFIG)
# yaml-cpp >= 0.7: the daemon's config file, private to lib/daemon.
find_package(yaml-cpp 0.7 REQUIRED CONFIG)
# zstd >= 1.5 and lz4 >= 1.9: lossless KV codecs in kernels/ and the disk tier's compression.
pkg_check_modules(ZSTD REQUIRED IMPORTED_TARGET libzstd>=1.5)
pkg_check_modules(LZ4 REQUIRED IMPORTED_TARGET liblz4>=1.9)
# spdlog >= 1.10: the daemon's structured log, private to lib/daemon/log.cc.
find_package(spdlog 1.10 REQUIRED CONFIG)
# cpp-httplib >= 0.11: the daemon's /metrics, /healthz and /readyz endpoint, private to
# lib/daemon/metrics_server.cc.
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib>=0.11)
# RocksDB >= 7.8: disk-tier index and metadata, private to store/.
pkg_check_modules(ROCKSDB REQUIRED IMPORTED_TARGET rocksdb>=7.8)

# Protobuf >= 3.21 (lite runtime): wire messages, generated at build time, private to transport/.
find_package(Protobuf 3.21 REQUIRED)
# libcurl >= 7.88: HTTP client for etcd's v3 JSON gateway, private to transport/membership/.
find_package(CURL 7.88 REQUIRED)
# OpenSSL >= 3.0 (libcrypto): HMAC-SHA256 of the peer handshake, private to transport/wire/, and
# SHA-256 of the engine key schemes, private to lib/core.
find_package(OpenSSL 3.0 REQUIRED COMPONENTS Crypto)

# libzmq >= 4.3 and msgpack-c >= 4.0: vLLM-format KV events (ZMQ PUB/SUB/ROUTER, msgpack
# batches), private to lib/events. Debian 12 names the msgpack C library's module `msgpack`,
# newer releases `msgpack-c`.
pkg_check_modules(ZMQ REQUIRED IMPORTED_TARGET libzmq>=4.3)
pkg_search_module(MSGPACK REQUIRED IMPORTED_TARGET msgpack-c>=4.0 msgpack>=4.0)

# UCX >= 1.13: data plane, private to transport/ucx/.
set(STRATA_UCX_STATUS "off")
if(NOT STRATA_WITH_UCX STREQUAL "off")
  pkg_check_modules(UCX IMPORTED_TARGET ucx>=1.13)
  if(UCX_FOUND)
    set(STRATA_UCX_STATUS "on (${UCX_VERSION})")
  elseif(STRATA_WITH_UCX STREQUAL "on")
    message(FATAL_ERROR "STRATA_WITH_UCX=on but UCX >= 1.13 was not found (run deploy/install-deps.sh)")
  endif()
endif()

# CUDA: the kernels/ target and the device tier. Looked for in CUDA's standard location too, so
# a machine with /usr/local/cuda but no nvcc on PATH still builds the kernels.
set(STRATA_CUDA_STATUS "off")
set(STRATA_HAVE_CUDA OFF)
if(NOT STRATA_WITH_CUDA STREQUAL "off")
  if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(CMAKE_CUDA_ARCHITECTURES ${STRATA_CUDA_ARCHS})
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(STRATA_HAVE_CUDA ON)
    set(STRATA_CUDA_STATUS "on (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, archs ${STRATA_CUDA_ARCHS})")
  elseif(STRATA_WITH_CUDA STREQUAL "on")
    message(FATAL_ERROR "STRATA_WITH_CUDA=on but no CUDA compiler was found")
  else()
    message(STATUS "CUDA is off: nvcc not found (the CPU reference kernels are still built)")
  endif()
endif()

# Python module: pybind11 >= 2.10 against Debian's own interpreter (/usr/bin/python3), the one
# Debian's python3-numpy/-torch/-pytest install into; another python3 may come first on PATH.
set(STRATA_PYTHON_STATUS "off")
set(STRATA_HAVE_PYTHON OFF)
if(NOT STRATA_BUILD_PYTHON STREQUAL "off")
  if(EXISTS /usr/bin/python3 AND NOT Python3_EXECUTABLE)
    set(Python3_EXECUTABLE /usr/bin/python3 CACHE FILEPATH "Python interpreter for the module and its tests")
  endif()
  set(PYBIND11_FINDPYTHON ON)
  find_package(Python3 3.9 COMPONENTS Interpreter Development.Module)
  if(Python3_FOUND)
    find_package(pybind11 2.10 CONFIG)
  endif()
  if(Python3_FOUND AND pybind11_FOUND)
    set(STRATA_HAVE_PYTHON ON)
    set(STRATA_PYTHON_STATUS "on (${Python3_EXECUTABLE} ${Python3_VERSION})")
  elseif(STRATA_BUILD_PYTHON STREQUAL "on")
    message(FATAL_ERROR "STRATA_BUILD_PYTHON=on but pybind11 or the python3 headers were not found")
  endif()
endif()

# hiredis >= 0.14: the Redis baseline of `strata bench client`.
pkg_check_modules(HIREDIS IMPORTED_TARGET hiredis>=0.14)

if(STRATA_BUILD_TESTS)
  # Catch2 2.13 (Debian 12): catch2/catch.hpp, target Catch2::Catch2, catch_discover_tests.
  find_package(Catch2 2.13 REQUIRED CONFIG)
  include(Catch)
endif()
