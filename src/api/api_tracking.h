/*
 * api_tracking.h - the handlers of the message tracking routes
 * (api_tracking.c, issue 11): search, and one message's timeline.
 */
#ifndef MOAT_API_TRACKING_H
#define MOAT_API_TRACKING_H

#include "api.h"

void api_tracking_search(struct api_request *req, struct api_response *resp);
void api_tracking_get(struct api_request *req, struct api_response *resp);

#endif
