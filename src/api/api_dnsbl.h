/*
 * api_dnsbl.h - the handlers of /api/v1/dnsbl/zones (api_dnsbl.c), for the
 * route table in api_routes.c.
 */
#ifndef MOAT_API_DNSBL_H
#define MOAT_API_DNSBL_H

#include "api.h"

void api_dnsbl_zones_list(struct api_request *req, struct api_response *resp);
void api_dnsbl_zones_create(struct api_request *req, struct api_response *resp);
void api_dnsbl_zones_delete(struct api_request *req, struct api_response *resp);

#endif
