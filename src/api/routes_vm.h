/* REST routes for the VM itself: /v1/vm and its actions. */
#ifndef FERRY_API_ROUTES_VM_H
#define FERRY_API_ROUTES_VM_H

#include <stddef.h>

#include "api/api.h"

extern const struct api_route vm_routes[];
extern const size_t vm_routes_count;

#endif
