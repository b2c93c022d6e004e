/*
 * api_connect.h - the handlers of the Connect and organisation routes
 * (api_connect.c), for the route table in api_routes.c.
 */
#ifndef MOAT_API_CONNECT_H
#define MOAT_API_CONNECT_H

#include "api.h"

void api_connect_overview(struct api_request *req, struct api_response *resp);
void api_connect_detail(struct api_request *req, struct api_response *resp);
void api_connect_check(struct api_request *req, struct api_response *resp);
void api_connect_skip(struct api_request *req, struct api_response *resp);
void api_connect_input(struct api_request *req, struct api_response *resp);
void api_organisation_get(struct api_request *req, struct api_response *resp);
void api_organisation_update(struct api_request *req, struct api_response *resp);

#endif
