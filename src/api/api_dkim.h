/*
 * api_dkim.h - the DKIM signing key routes (api_dkim.c) for the route table.
 */
#ifndef MOAT_API_DKIM_H
#define MOAT_API_DKIM_H

#include "api.h"

void api_dkim_keys_list(struct api_request *req, struct api_response *resp);
void api_dkim_keys_create(struct api_request *req, struct api_response *resp);
void api_dkim_keys_delete(struct api_request *req, struct api_response *resp);
void api_dkim_keys_activate(struct api_request *req, struct api_response *resp);

#endif
