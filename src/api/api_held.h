/*
 * api_held.h - the handlers of issue 7's held-mail routes (api_held.c):
 * held messages, blocked senders and forwarding rules, for the route
 * table in api_routes.c.
 */
#ifndef MOAT_API_HELD_H
#define MOAT_API_HELD_H

#include "api.h"

void api_held_list(struct api_request *req, struct api_response *resp);
void api_held_show(struct api_request *req, struct api_response *resp);
void api_held_release(struct api_request *req, struct api_response *resp);
void api_held_delete(struct api_request *req, struct api_response *resp);
void api_blocked_list(struct api_request *req, struct api_response *resp);
void api_blocked_create(struct api_request *req, struct api_response *resp);
void api_blocked_delete(struct api_request *req, struct api_response *resp);
void api_forwarding_list(struct api_request *req, struct api_response *resp);
void api_forwarding_create(struct api_request *req, struct api_response *resp);
void api_forwarding_delete(struct api_request *req, struct api_response *resp);

#endif
