# Safetensors checkpoints (read through memory maps, written in a stream), sharded and
# diffusers layouts, and the model pipeline. JSON headers are parsed with Jansson.
find_package(PkgConfig REQUIRED)
pkg_check_modules(JANSSON REQUIRED IMPORTED_TARGET jansson)
list(APPEND AQ_SOURCES
    ${CMAKE_CURRENT_LIST_DIR}/st_parse.c
    ${CMAKE_CURRENT_LIST_DIR}/st_file.c
    ${CMAKE_CURRENT_LIST_DIR}/io_path.c
    ${CMAKE_CURRENT_LIST_DIR}/st_write.c
    ${CMAKE_CURRENT_LIST_DIR}/model.c
    ${CMAKE_CURRENT_LIST_DIR}/model_quant.c
    ${CMAKE_CURRENT_LIST_DIR}/model_plan.c
    ${CMAKE_CURRENT_LIST_DIR}/model_rows.c
    ${CMAKE_CURRENT_LIST_DIR}/model_compare.c
    ${CMAKE_CURRENT_LIST_DIR}/qmodel.c
    ${CMAKE_CURRENT_LIST_DIR}/gguf_read.c
    ${CMAKE_CURRENT_LIST_DIR}/gguf_file.c
    ${CMAKE_CURRENT_LIST_DIR}/gguf_plan.c
    ${CMAKE_CURRENT_LIST_DIR}/gguf_write.c)
list(APPEND AQ_PRIVATE_INCLUDES ${CMAKE_CURRENT_LIST_DIR})
list(APPEND AQ_LINK_LIBS PkgConfig::JANSSON)
