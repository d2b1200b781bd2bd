# The library's layers, as the build enforces them.
#
# Each layer is one object library (aq_layer_<name>) compiled with the private include folders
# of its own module and of the layers it uses, and of theirs, and no others: an #include of a
# higher module's internal header does not compile. After the build, cmake/check_layers.cmake
# reads the symbols of every object file and fails the build when a layer calls a function
# defined in a layer it does not name in USES (not transitively: calling past a layer into the
# one below it is a violation too), or when the command or the Python module calls a function
# that the shared library does not export (anything but the public header's API).
#
#   aq_layer(NAME MODULE <src folder> [FILES <files of the folder>] [USES <lower layers>])
#
# A module is one layer unless FILES splits it. A module or file not placed here stops the
# configuration with the line to add. aq_layer_allow(FROM a TO b SYMBOLS ...) lists a call
# against the direction that the code still makes; each is a cycle to break (see
# docs/decisions.md, "Layers").

set(AQ_LAYERS "")

function(aq_layer name)
    cmake_parse_arguments(L "" "MODULE" "FILES;USES" ${ARGN})
    set(sources "")
    foreach(src ${AQ_MODULE_SOURCES_${L_MODULE}})
        get_filename_component(file ${src} NAME)
        if(NOT L_FILES OR file IN_LIST L_FILES)
            list(APPEND sources ${src})
        endif()
    endforeach()
    set_property(GLOBAL APPEND PROPERTY AQ_LAYER_PLACED ${sources})
    if(NOT sources)
        return()  # the module is not built (AQ_MODULES)
    endif()
    set(uses "")
    foreach(u ${L_USES})
        if(u IN_LIST AQ_LAYERS)
            list(APPEND uses ${u})
        endif()
    endforeach()
    # Include folders: this module's and, transitively, those of the layers it uses (a header
    # of a lower layer may include one of the layer below it).
    set(dirs ${PROJECT_SOURCE_DIR}/src/${L_MODULE})
    foreach(u ${uses})
        list(APPEND dirs ${AQ_LAYER_DIRS_${u}})
    endforeach()
    list(REMOVE_DUPLICATES dirs)
    add_library(aq_layer_${name} OBJECT ${sources})
    target_include_directories(aq_layer_${name} PUBLIC ${PROJECT_SOURCE_DIR}/include
                                                PRIVATE ${dirs})
    set(AQ_LAYER_DIRS_${name} ${dirs} PARENT_SCOPE)
    set(AQ_LAYER_USES_${name} ${uses} PARENT_SCOPE)
    set(AQ_LAYERS ${AQ_LAYERS} ${name} PARENT_SCOPE)
endfunction()

set(AQ_LAYER_ALLOWED "")
macro(aq_layer_allow)
    cmake_parse_arguments(A "" "FROM;TO" "SYMBOLS" ${ARGN})
    foreach(sym ${A_SYMBOLS})
        list(APPEND AQ_LAYER_ALLOWED "${A_FROM}:${A_TO}:${sym}")
    endforeach()
endmacro()

# ---- the layers, lowest first -------------------------------------------------------------
aq_layer(common  MODULE common)
aq_layer(kernels MODULE kernels USES common)
aq_layer(quant   MODULE quant   USES kernels common)
# The layer rules and profiles decide per tensor; they need nothing above common.
aq_layer(rules   MODULE diffusion FILES rules.c profile.c USES common)
# The settings table checks values against the scheme table and fills profiles and contexts.
aq_layer(settings MODULE diffusion FILES settings.c USES rules quant common)
# The calibration statistics' table and its importance lookup: the batch and model paths
# look each row's importance up in it.
aq_layer(calib   MODULE diffusion FILES calib.c USES common)
aq_layer(arrow   MODULE arrow   USES calib rules quant common)
aq_layer(ipc     MODULE ipc     USES arrow common)
# Calibration statistics arrive as Arrow tables or IPC files.
aq_layer(calib_read MODULE diffusion FILES calib_read.c USES calib ipc arrow common)
aq_layer(io      MODULE io      USES calib_read calib rules ipc arrow quant common)

# ---- calls against the direction that remain ----------------------------------------------
# None. aq_layer_allow(FROM a TO b SYMBOLS ...) would list one, each a cycle to break.

# Every source of the built modules must be in a layer.
get_property(aq_placed GLOBAL PROPERTY AQ_LAYER_PLACED)
foreach(module ${AQ_MODULES})
    foreach(src ${AQ_MODULE_SOURCES_${module}})
        if(NOT src IN_LIST aq_placed)
            file(RELATIVE_PATH rel ${PROJECT_SOURCE_DIR} ${src})
            message(FATAL_ERROR "${rel} is in no layer: add it (or its module) to an "
                                "aq_layer(...) line of cmake/layers.cmake")
        endif()
    endforeach()
endforeach()

set(AQ_LAYER_OBJECTS "")
foreach(name ${AQ_LAYERS})
    list(APPEND AQ_LAYER_OBJECTS $<TARGET_OBJECTS:aq_layer_${name}>)
endforeach()

# aq_layer_check(): after the command and the Python module exist, a target in ALL that runs
# cmake/check_layers.cmake whenever an object file changes.
function(aq_layer_check)
    if(NOT CMAKE_READELF)
        message(STATUS "readelf not found: the layer check is off")
        return()
    endif()
    set(manifest "set(AQ_LAYERS \"${AQ_LAYERS}\")\n")
    string(APPEND manifest "set(AQ_LAYER_ALLOWED \"${AQ_LAYER_ALLOWED}\")\n")
    set(depends "")
    foreach(name ${AQ_LAYERS})
        string(APPEND manifest "set(AQ_LAYER_USES_${name} \"${AQ_LAYER_USES_${name}}\")\n")
        string(APPEND manifest
               "set(AQ_LAYER_OBJECTS_${name} \"$<TARGET_OBJECTS:aq_layer_${name}>\")\n")
        list(APPEND depends aq_layer_${name})
    endforeach()
    # Programs over the public header only.
    set(clients "")
    foreach(target arrowquant_cli aq_python)
        if(TARGET ${target})
            list(APPEND clients ${target})
            string(APPEND manifest
                   "set(AQ_CLIENT_OBJECTS_${target} \"$<TARGET_OBJECTS:${target}>\")\n")
            list(APPEND depends ${target} $<TARGET_OBJECTS:${target}>)
        endif()
    endforeach()
    string(APPEND manifest "set(AQ_CLIENTS \"${clients}\")\n")
    file(GENERATE OUTPUT ${PROJECT_BINARY_DIR}/layers/manifest-$<CONFIG>.cmake
         CONTENT "${manifest}")
    add_custom_command(OUTPUT ${PROJECT_BINARY_DIR}/layers/checked.stamp
        COMMAND ${CMAKE_COMMAND} -DMANIFEST=${PROJECT_BINARY_DIR}/layers/manifest-$<CONFIG>.cmake
                -DREADELF=${CMAKE_READELF} -DROOT=${PROJECT_SOURCE_DIR}
                -P ${PROJECT_SOURCE_DIR}/cmake/check_layers.cmake
        COMMAND ${CMAKE_COMMAND} -E touch ${PROJECT_BINARY_DIR}/layers/checked.stamp
        DEPENDS ${PROJECT_SOURCE_DIR}/cmake/check_layers.cmake
                ${PROJECT_BINARY_DIR}/layers/manifest-$<CONFIG>.cmake
                ${depends} ${AQ_LAYER_OBJECTS}
        COMMENT "Checking the library's layers (cmake/layers.cmake)"
        VERBATIM)
    add_custom_target(aq_layer_check ALL DEPENDS ${PROJECT_BINARY_DIR}/layers/checked.stamp)
endfunction()
