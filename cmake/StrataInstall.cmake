# What `cmake --install` puts under the prefix (docs/operations.md, "Installing"):
#   bin/strata                          the CLI and daemon (tools/CMakeLists.txt)
#   include/strata/*.h                  the public headers
#   <libdir>/libstrata.so.<major.minor> the C ABI and C++ API (lib/CMakeLists.txt)
#   <libdir>/cmake/strata/              find_package(strata CONFIG): strata::client, strata::c
#   <libdir>/pkgconfig/strata.pc        pkg-config --cflags --libs strata
#   <STRATA_INSTALL_PYTHONDIR>/         the Python module and every .py file of lib/python/
#   lib/systemd/system/strata.service   the hardened unit (deploy/systemd/)
#   share/strata/                       demo trace, example config and environment file
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# Installed binaries keep the run path of libraries outside the system directories they were
# linked with (e.g. /usr/local/cuda/lib for libcudart); the build tree's own paths are dropped.
set_target_properties(strata strata_shared PROPERTIES INSTALL_RPATH_USE_LINK_PATH TRUE)

install(TARGETS strata_shared strata_c EXPORT strataTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} NAMELINK_COMPONENT Development
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/lib/include/strata
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.h")

set(STRATA_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/strata)
install(EXPORT strataTargets NAMESPACE strata:: DESTINATION ${STRATA_INSTALL_CMAKEDIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/strataConfig.cmake.in
  ${PROJECT_BINARY_DIR}/cmake/strataConfig.cmake INSTALL_DESTINATION ${STRATA_INSTALL_CMAKEDIR})
# 0.x: a new minor version may change the API, so only the same major.minor is compatible.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/cmake/strataConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/cmake/strataConfig.cmake
              ${PROJECT_BINARY_DIR}/cmake/strataConfigVersion.cmake
        DESTINATION ${STRATA_INSTALL_CMAKEDIR})

# strata.pc finds the prefix from its own location, so a tree installed with --prefix elsewhere
# (or moved) still works: ${pcfiledir}/../.. for lib/pkgconfig.
set(_pc_up "..")
string(REPLACE "/" ";" _libdir_parts "${CMAKE_INSTALL_LIBDIR}")
foreach(_part IN LISTS _libdir_parts)
  string(APPEND _pc_up "/..")
endforeach()
set(STRATA_PC_PREFIX "\${pcfiledir}/${_pc_up}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/strata.pc.in ${PROJECT_BINARY_DIR}/cmake/strata.pc
  @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/cmake/strata.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

# The Python module and the .py files beside its source (the engine adapters), into a directory
# the prefix's python3 searches: Debian's /usr/lib/python3/dist-packages for prefix /usr, else
# lib/python3.X/dist-packages (on Debian's sys.path for /usr/local; PYTHONPATH for others).
if(STRATA_HAVE_PYTHON)
  if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
    set(_py_dir lib/python3/dist-packages)
  else()
    set(_py_dir lib/python${Python3_VERSION_MAJOR}.${Python3_VERSION_MINOR}/dist-packages)
  endif()
  set(STRATA_INSTALL_PYTHONDIR ${_py_dir} CACHE STRING
    "Where `cmake --install` puts the Python module, relative to the prefix")
  install(TARGETS strata_python LIBRARY DESTINATION ${STRATA_INSTALL_PYTHONDIR}/strata)
  # Globbed at install time: adapter packages added later need no edit here.
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/lib/python/ DESTINATION ${STRATA_INSTALL_PYTHONDIR}
    FILES_MATCHING PATTERN "*.py" PATTERN "*.pyi" PATTERN "py.typed"
    PATTERN "__pycache__" EXCLUDE PATTERN "tests" EXCLUDE)
endif()

# Running it as a service: the unit (systemd also searches <prefix>/lib/systemd/system for
# /usr/local) and the files it reads, as examples to copy to /etc/strata/.
install(FILES ${PROJECT_SOURCE_DIR}/deploy/systemd/strata.service
  DESTINATION lib/systemd/system)
install(FILES ${PROJECT_SOURCE_DIR}/deploy/systemd/strata.env
              ${PROJECT_SOURCE_DIR}/deploy/systemd/strata.yaml
        DESTINATION ${CMAKE_INSTALL_DATADIR}/strata/examples)
