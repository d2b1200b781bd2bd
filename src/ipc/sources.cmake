# Arrow IPC reader and writer; body compression through Debian's libzstd and liblz4.
list(APPEND AQ_SOURCES
    ${CMAKE_CURRENT_LIST_DIR}/flatbuf.c
    ${CMAKE_CURRENT_LIST_DIR}/ipc_codec.c
    ${CMAKE_CURRENT_LIST_DIR}/ipc_schema.c
    ${CMAKE_CURRENT_LIST_DIR}/ipc_reader.c
    ${CMAKE_CURRENT_LIST_DIR}/ipc_writer.c)
list(APPEND AQ_PRIVATE_INCLUDES ${CMAKE_CURRENT_LIST_DIR})
list(APPEND AQ_LINK_LIBS zstd lz4)
