list(APPEND AQ_SOURCES
    ${CMAKE_CURRENT_LIST_DIR}/kernels_ref.c
    ${CMAKE_CURRENT_LIST_DIR}/dispatch.c
    ${CMAKE_CURRENT_LIST_DIR}/kernels_ref_search.c
    ${CMAKE_CURRENT_LIST_DIR}/kernels_ref_kquant.c)
list(APPEND AQ_PRIVATE_INCLUDES ${CMAKE_CURRENT_LIST_DIR})
# The quality kernels are written for the auto-vectoriser (eight double lanes per sum).
set_source_files_properties(
    ${CMAKE_CURRENT_LIST_DIR}/kernels_ref_search.c
    ${CMAKE_CURRENT_LIST_DIR}/kernels_ref_kquant.c
    PROPERTIES COMPILE_OPTIONS "-O3")
