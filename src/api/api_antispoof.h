/*
 * api_antispoof.h - the handlers of the anti-spoofing routes
 * (api_antispoof.c): bypasses and refused sources, for api_routes.c.
 */
#ifndef MOAT_API_ANTISPOOF_H
#define MOAT_API_ANTISPOOF_H

#include "api.h"

void api_antispoof_bypasses_list(struct api_request *req, struct api_response *resp);
void api_antispoof_bypasses_create(struct api_request *req, struct api_response *resp);
void api_antispoof_bypasses_delete(struct api_request *req, struct api_response *resp);
void api_antispoof_candidates_list(struct api_request *req, struct api_response *resp);
void api_antispoof_candidates_bypass(struct api_request *req, struct api_response *resp);

#endif
