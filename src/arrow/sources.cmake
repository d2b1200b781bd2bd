list(APPEND AQ_SOURCES
    ${CMAKE_CURRENT_LIST_DIR}/arrow_owned.c
    ${CMAKE_CURRENT_LIST_DIR}/arrow_import.c
    ${CMAKE_CURRENT_LIST_DIR}/arrow_report.c
    ${CMAKE_CURRENT_LIST_DIR}/arrow_batch.c
    ${CMAKE_CURRENT_LIST_DIR}/arrow_dequant.c
    ${CMAKE_CURRENT_LIST_DIR}/arrow_rowschemes.c
    ${CMAKE_CURRENT_LIST_DIR}/arrow_rules.c
    ${CMAKE_CURRENT_LIST_DIR}/arrow_stream.c)
list(APPEND AQ_PRIVATE_INCLUDES ${CMAKE_CURRENT_LIST_DIR})
