/*
 * api_priv.h - private to src/api: the pieces of the HTTP request path that
 * the unit tests and the fuzz target call directly (body parsing, route
 * matching), and the handlers of api_config.c and api_queue.c for the route
 * table.
 */
#ifndef MOAT_API_PRIV_H
#define MOAT_API_PRIV_H

#include "api.h"

/* api_parse_body - a request body into a JSON object, strictly: content_type
 * must be application/json (415), the text valid UTF-8 JSON without
 * duplicate keys (400 invalid_json naming the position), and an object
 * (400 invalid_body).  len 0 gives *out = NULL.  0 = ok, else resp holds
 * the error. */
int api_parse_body(const char *data, size_t len, const char *content_type, json_t **out,
                   struct api_response *resp);

/* api_route_find - the route for method + path, its {name} segments in
 * params (pointers into scratch, which must hold strlen(path) + 1 bytes).
 * NULL when none; then *path_known tells whether another method matches
 * (405) and allow lists those methods ("GET, DELETE"). */
const struct api_route *api_route_find(const char *method, const char *path, char *scratch,
                                       const char *params[API_MAX_PATH_PARAMS], int *n_params,
                                       bool *path_known, char *allow, size_t allow_size);

/* api_response_reset - release the body and clear resp for another answer */
void api_response_reset(struct api_response *resp);

/* api_parse_time - unix seconds, or ISO 8601 (2026-11-28, 2026-11-28T18:39,
 * 2026-11-28T18:39:50Z, 2026-11-28T18:39:50+01:00; no zone = UTC); -1 when
 * neither (api_auth.c; the audit log and tracking queries) */
int api_parse_time(const char *s, int64_t *out);
/* api_json_text - s as a JSON string; NULL -> null; octets that are not
 * UTF-8 become '?' (api_archive.c; text a remote client or server sent) */
json_t *api_json_text(const char *s);

/* --- handlers (api_config.c) --- */
void api_health(struct api_request *req, struct api_response *resp);
void api_status(struct api_request *req, struct api_response *resp);
void api_domains_list(struct api_request *req, struct api_response *resp);
void api_domains_create(struct api_request *req, struct api_response *resp);
void api_domains_get(struct api_request *req, struct api_response *resp);
void api_domains_delete(struct api_request *req, struct api_response *resp);
void api_domains_verify(struct api_request *req, struct api_response *resp);
void api_route_get(struct api_request *req, struct api_response *resp);
void api_route_put(struct api_request *req, struct api_response *resp);
void api_route_delete(struct api_request *req, struct api_response *resp);
void api_settings_get(struct api_request *req, struct api_response *resp);
void api_settings_update(struct api_request *req, struct api_response *resp);
void api_settings_reset(struct api_request *req, struct api_response *resp);

/* --- handlers (api_queue.c) --- */
void api_queue_list(struct api_request *req, struct api_response *resp);
void api_queue_show(struct api_request *req, struct api_response *resp);
void api_queue_retry(struct api_request *req, struct api_response *resp);
void api_queue_retry_all(struct api_request *req, struct api_response *resp);
void api_queue_delete(struct api_request *req, struct api_response *resp);

#endif
