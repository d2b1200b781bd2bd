/* Internal interface of the calibration statistics for the layers above them. */
#ifndef AQ_CALIB_INTERNAL_H
#define AQ_CALIB_INTERNAL_H

#include "aq_common.h"

/* The files the statistics were read from (aq_calib_add_ipc_file), in order: inputs of a run
 * like the model's own files, so an output must be none of them. Owned by the calib. */
size_t aq__calib_source_count(const aq_calib *calib);
const char *aq__calib_source(const aq_calib *calib, size_t i);

#endif
