/*
 * api_ldap.h - the handlers of the directory's LDAP sync routes
 * (api_ldap.c), for the route table in api_routes.c.
 */
#ifndef MOAT_API_LDAP_H
#define MOAT_API_LDAP_H

#include "api.h"

void api_directory_source_get(struct api_request *req, struct api_response *resp);
void api_directory_source_put(struct api_request *req, struct api_response *resp);
void api_directory_test(struct api_request *req, struct api_response *resp);
void api_directory_preview(struct api_request *req, struct api_response *resp);
void api_directory_sync_start(struct api_request *req, struct api_response *resp);
void api_directory_sync_status(struct api_request *req, struct api_response *resp);

#endif
