/* Shared between the files of common/ only. */
#ifndef WL_INTERNAL_H
#define WL_INTERNAL_H

#include "wl.h"

void wl_args_parse(const wl_spec_t *spec, int argc, char **argv);

#endif
