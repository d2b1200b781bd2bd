list(APPEND AQ_SOURCES
    ${CMAKE_CURRENT_LIST_DIR}/kernels_ref.c
    ${CMAKE_CURRENT_LIST_DIR}/dispatch.c
    ${CMAKE_CURRENT_LIST_DIR}/kernels_ref_search.c
    ${CMAKE_CURRENT_LIST_DIR}/kernels_ref_kquant.c
    ${CMAKE_CURRENT_LIST_DIR}/kernels_ref_ggml.c)
list(APPEND AQ_PRIVATE_INCLUDES ${CMAKE_CURRENT_LIST_DIR})
# The quality kernels are written for the auto-vectoriser (eight double lanes per sum).
set_source_files_properties(
    ${CMAKE_CURRENT_LIST_DIR}/kernels_ref_search.c
    ${CMAKE_CURRENT_LIST_DIR}/kernels_ref_kquant.c
    ${CMAKE_CURRENT_LIST_DIR}/kernels_ref_ggml.c
    PROPERTIES COMPILE_OPTIONS "-O3")

# SIMD kernels: one translation unit per instruction set, compiled with its own flags and
# exposing only a const table; dispatch.c checks the CPU before handing a table out, so the
# rest of the library stays baseline code. No -mfma: the kernels must not contract a*b+c
# (-ffp-contract=off is global, this keeps the compiler from even considering it).
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
    list(APPEND AQ_SOURCES
        ${CMAKE_CURRENT_LIST_DIR}/kernels_avx2.c
        ${CMAKE_CURRENT_LIST_DIR}/kernels_avx512.c
        ${CMAKE_CURRENT_LIST_DIR}/kernels_kquant_avx2.c
        ${CMAKE_CURRENT_LIST_DIR}/kernels_kquant_avx512.c
        ${CMAKE_CURRENT_LIST_DIR}/kernels_ggml_avx2.c)
    # The ggml encoders: the reference's arithmetic, eight blocks per vector (no FMA: same bits).
    set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/kernels_ggml_avx2.c PROPERTIES
        COMPILE_OPTIONS "-O3;-mavx2;-mf16c")
    set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/kernels_avx2.c
        ${CMAKE_CURRENT_LIST_DIR}/kernels_kquant_avx2.c PROPERTIES
        COMPILE_OPTIONS "-mavx2;-mf16c")
    set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/kernels_avx512.c
        ${CMAKE_CURRENT_LIST_DIR}/kernels_kquant_avx512.c PROPERTIES
        COMPILE_OPTIONS "-mavx512f;-mavx512bw;-mavx512dq;-mavx512vl;-mavx2;-mf16c")
    add_compile_definitions(AQ_HAVE_X86_KERNELS=1)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64|ARM64)$")
    # Advanced SIMD is part of the AArch64 base architecture: no flags, no run-time check.
    list(APPEND AQ_SOURCES ${CMAKE_CURRENT_LIST_DIR}/kernels_neon.c
        ${CMAKE_CURRENT_LIST_DIR}/kernels_kquant_neon.c)
    add_compile_definitions(AQ_HAVE_NEON_KERNELS=1)
endif()
