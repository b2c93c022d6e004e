/*
 * api_tls.h - the outbound TLS policy routes (api_tls.c) and the route
 * probe api_route_put uses ("tested before enforced", issue 6).
 */
#ifndef MOAT_API_TLS_H
#define MOAT_API_TLS_H

#include "api.h"

void api_tls_policies_list(struct api_request *req, struct api_response *resp);
void api_tls_policy_put(struct api_request *req, struct api_response *resp);
void api_tls_policy_get(struct api_request *req, struct api_response *resp);
void api_tls_policy_delete(struct api_request *req, struct api_response *resp);
void api_tls_policy_probe(struct api_request *req, struct api_response *resp);

/* api_tls_route_probe - a route with tls relaxed or strict is probed
 * (host:port) before it is stored; 0 = go on (met, opportunistic, or
 * override: audited as route.tls_override), -1 = resp holds the answer
 * (409 probe_failed with the probe, or 503) */
int api_tls_route_probe(struct api_request *req, struct api_response *resp, const char *domain,
                        const char *host, int port, enum store_tls_mode tls, bool override);

#endif
