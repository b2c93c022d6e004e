/*
 * api_backup.h - GET /api/v1/backup (api_backup.c): the backup that
 * `moat backup` saves (src/backup/backup.h).
 */
#ifndef MOAT_API_BACKUP_H
#define MOAT_API_BACKUP_H

#include "api.h"

void api_backup_get(struct api_request *req, struct api_response *resp);

#endif
