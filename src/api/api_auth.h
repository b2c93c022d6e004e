/*
 * api_auth.h - the handlers of the auth, account, token and audit routes
 * (api_auth.c).  The route table (api_routes.c) references them; each one
 * names its method, path and permission below, as the table must.
 *
 * Bodies are strict (api_body_check); every change writes an audit entry
 * (api_audit) with secrets left out.  Lists are paged (?limit=, ?cursor=).
 */
#ifndef MOAT_API_AUTH_H
#define MOAT_API_AUTH_H

#include "api.h"

/* sign-in and the caller's own account */
void api_auth_login(struct api_request *req, struct api_response *resp);          /* POST   /api/v1/auth/login            PUBLIC */
void api_auth_logout(struct api_request *req, struct api_response *resp);         /* POST   /api/v1/auth/logout           SELF */
void api_auth_me(struct api_request *req, struct api_response *resp);             /* GET    /api/v1/auth/me               SELF */
void api_auth_password(struct api_request *req, struct api_response *resp);       /* POST   /api/v1/auth/password         SELF */
void api_auth_sessions_list(struct api_request *req, struct api_response *resp);  /* GET    /api/v1/auth/sessions         SELF */
void api_auth_session_delete(struct api_request *req, struct api_response *resp); /* DELETE /api/v1/auth/sessions/{id}    SELF */
void api_auth_totp_enroll(struct api_request *req, struct api_response *resp);    /* POST   /api/v1/auth/totp             SELF */
void api_auth_totp_confirm(struct api_request *req, struct api_response *resp);   /* POST   /api/v1/auth/totp/confirm     SELF */
void api_auth_totp_disable(struct api_request *req, struct api_response *resp);   /* DELETE /api/v1/auth/totp             SELF */

/* accounts */
void api_accounts_list(struct api_request *req, struct api_response *resp);       /* GET    /api/v1/accounts              ACCOUNTS_MANAGE */
void api_account_create(struct api_request *req, struct api_response *resp);      /* POST   /api/v1/accounts              ACCOUNTS_MANAGE */
void api_account_get(struct api_request *req, struct api_response *resp);         /* GET    /api/v1/accounts/{id}         ACCOUNTS_MANAGE */
void api_account_update(struct api_request *req, struct api_response *resp);      /* PATCH  /api/v1/accounts/{id}         ACCOUNTS_MANAGE */
void api_account_delete(struct api_request *req, struct api_response *resp);      /* DELETE /api/v1/accounts/{id}         ACCOUNTS_MANAGE */

/* API tokens: own ones with SELF; ?account= and other people's need ACCOUNTS_MANAGE
 * (checked inside the handler against the role table) */
void api_tokens_list(struct api_request *req, struct api_response *resp);         /* GET    /api/v1/tokens                SELF */
void api_token_create(struct api_request *req, struct api_response *resp);        /* POST   /api/v1/tokens                SELF */
void api_token_delete(struct api_request *req, struct api_response *resp);        /* DELETE /api/v1/tokens/{id}           SELF */

/* the audit log: read only; nothing in the API alters it */
void api_audit_list(struct api_request *req, struct api_response *resp);          /* GET    /api/v1/audit                 AUDIT_READ */

#endif
