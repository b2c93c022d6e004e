/*
 * api_archive.h - the handlers of the archive routes (api_archive.c):
 * search, view, .eml, mbox export, figures, purge, legal holds (issue 8);
 * and of the journal role's configuration (api_journal.c).
 */
#ifndef MOAT_API_ARCHIVE_H
#define MOAT_API_ARCHIVE_H

#include "api.h"

void api_archive_search(struct api_request *req, struct api_response *resp);
void api_archive_get(struct api_request *req, struct api_response *resp);
void api_archive_eml(struct api_request *req, struct api_response *resp);
void api_archive_export(struct api_request *req, struct api_response *resp);
void api_archive_stats(struct api_request *req, struct api_response *resp);
void api_archive_purge(struct api_request *req, struct api_response *resp);
void api_legal_holds_list(struct api_request *req, struct api_response *resp);
void api_legal_holds_create(struct api_request *req, struct api_response *resp);
void api_legal_holds_delete(struct api_request *req, struct api_response *resp);

/* api_journal.c */
void api_journal_get(struct api_request *req, struct api_response *resp);
void api_journal_put(struct api_request *req, struct api_response *resp);
void api_journal_sources_list(struct api_request *req, struct api_response *resp);
void api_journal_sources_create(struct api_request *req, struct api_response *resp);
void api_journal_sources_delete(struct api_request *req, struct api_response *resp);

#endif
