/* REST routes for live migration: /v1/migration. */
#ifndef FERRY_API_ROUTES_MIGRATION_H
#define FERRY_API_ROUTES_MIGRATION_H

#include <stddef.h>

#include "api/api.h"

extern const struct api_route migration_routes[];
extern const size_t migration_routes_count;

#endif
