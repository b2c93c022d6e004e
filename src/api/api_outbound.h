/*
 * api_outbound.h - the handlers of the outbound role's routes
 * (api_outbound.c): authorised outbound hosts, SMTP AUTH accounts and the
 * inbound TLS requirement, for the route table in api_routes.c.
 */
#ifndef MOAT_API_OUTBOUND_H
#define MOAT_API_OUTBOUND_H

#include "api.h"

void api_outbound_hosts_list(struct api_request *req, struct api_response *resp);
void api_outbound_hosts_create(struct api_request *req, struct api_response *resp);
void api_outbound_hosts_delete(struct api_request *req, struct api_response *resp);
void api_outbound_accounts_list(struct api_request *req, struct api_response *resp);
void api_outbound_accounts_create(struct api_request *req, struct api_response *resp);
void api_outbound_accounts_delete(struct api_request *req, struct api_response *resp);
void api_outbound_accounts_password(struct api_request *req, struct api_response *resp);
void api_tls_inbound_list(struct api_request *req, struct api_response *resp);
void api_tls_inbound_create(struct api_request *req, struct api_response *resp);
void api_tls_inbound_delete(struct api_request *req, struct api_response *resp);

#endif
