/*
 * api_metrics.h - GET /metrics (the Prometheus exposition, outside /api/v1
 * and outside sign-in) and POST /api/v1/metrics/token (api_metrics.c), for
 * the route table in api_routes.c.
 */
#ifndef MOAT_API_METRICS_H
#define MOAT_API_METRICS_H

#include "api.h"

void api_metrics(struct api_request *req, struct api_response *resp);
void api_metrics_token_create(struct api_request *req, struct api_response *resp);

#endif
