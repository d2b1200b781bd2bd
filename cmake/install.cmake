# Install rules of the C package, included from the top CMakeLists.txt.
#   cmake --install build [--prefix DIR]
# installs libarrowquant (shared and static), include/arrowquant.h (the stable part, and the
# experimental part opted into with AQ_EXPERIMENTAL), bin/arrowquant (src/cli),
# the CMake package lib/cmake/arrowquant (targets arrowquant::arrowquant and
# arrowquant::arrowquant_static, with a version file) and lib/pkgconfig/arrowquant.pc. The
# package is relocatable: both files find the prefix from where they are installed.
include(CMakePackageConfigHelpers)

set(AQ_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/arrowquant)

install(TARGETS arrowquant arrowquant_static
    EXPORT arrowquantTargets
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES ${PROJECT_SOURCE_DIR}/include/arrowquant.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT arrowquantTargets NAMESPACE arrowquant:: DESTINATION ${AQ_CMAKE_DIR})

# The static library's link interface names Jansson's pkg-config target when the io module is
# built; the package's config recreates it before loading the targets.
if("io" IN_LIST AQ_MODULES)
    set(AQ_CONFIG_NEEDS_JANSSON ON)
    set(AQ_PC_REQUIRES_PRIVATE "jansson libzstd liblz4")
elseif("ipc" IN_LIST AQ_MODULES)
    set(AQ_CONFIG_NEEDS_JANSSON OFF)
    set(AQ_PC_REQUIRES_PRIVATE "libzstd liblz4")
else()
    set(AQ_CONFIG_NEEDS_JANSSON OFF)
    set(AQ_PC_REQUIRES_PRIVATE "")
endif()
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/arrowquantConfig.cmake.in
    ${PROJECT_BINARY_DIR}/arrowquantConfig.cmake
    INSTALL_DESTINATION ${AQ_CMAKE_DIR})
# Before 1.0 a minor release may change the API, so only the same major.minor is compatible.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/arrowquantConfigVersion.cmake
    COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/arrowquantConfig.cmake
              ${PROJECT_BINARY_DIR}/arrowquantConfigVersion.cmake
        DESTINATION ${AQ_CMAKE_DIR})

# arrowquant.pc: the prefix is found from the file's own place (${pcfiledir}), so an install
# under any --prefix works without reconfiguring.
set(AQ_PC_DIR ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
file(RELATIVE_PATH AQ_PC_TO_PREFIX /root/${AQ_PC_DIR} /root)
string(REGEX REPLACE "/$" "" AQ_PC_TO_PREFIX "${AQ_PC_TO_PREFIX}")
configure_file(${CMAKE_CURRENT_LIST_DIR}/arrowquant.pc.in ${PROJECT_BINARY_DIR}/arrowquant.pc
               @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/arrowquant.pc DESTINATION ${AQ_PC_DIR})
