/*
 * api_permitted.h - the handlers of the permitted-sender routes
 * (api_permitted.c), for the route table in api_routes.c.
 */
#ifndef MOAT_API_PERMITTED_H
#define MOAT_API_PERMITTED_H

#include "api.h"

void api_permitted_list(struct api_request *req, struct api_response *resp);
void api_permitted_create(struct api_request *req, struct api_response *resp);
void api_permitted_delete(struct api_request *req, struct api_response *resp);
void api_permitted_import(struct api_request *req, struct api_response *resp);
void api_user_permitted_list(struct api_request *req, struct api_response *resp);
void api_user_permitted_create(struct api_request *req, struct api_response *resp);
void api_user_permitted_delete(struct api_request *req, struct api_response *resp);

#endif
