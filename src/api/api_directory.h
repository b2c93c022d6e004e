/*
 * api_directory.h - private to src/api: the handlers of api_directory.c
 * (users, groups, CSV import, recipient validation) for the route table.
 */
#ifndef MOAT_API_DIRECTORY_H
#define MOAT_API_DIRECTORY_H

#include "api.h"

void api_users_list(struct api_request *req, struct api_response *resp);
void api_users_create(struct api_request *req, struct api_response *resp);
void api_users_import(struct api_request *req, struct api_response *resp);
void api_users_get(struct api_request *req, struct api_response *resp);
void api_users_update(struct api_request *req, struct api_response *resp);
void api_users_delete(struct api_request *req, struct api_response *resp);
void api_groups_list(struct api_request *req, struct api_response *resp);
void api_groups_create(struct api_request *req, struct api_response *resp);
void api_groups_get(struct api_request *req, struct api_response *resp);
void api_groups_update(struct api_request *req, struct api_response *resp);
void api_groups_delete(struct api_request *req, struct api_response *resp);
void api_rv_list(struct api_request *req, struct api_response *resp);
void api_rv_set(struct api_request *req, struct api_response *resp);

#endif
