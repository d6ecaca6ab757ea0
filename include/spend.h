/* spend: what a done record counts against the daily limits and the cost,
 * one rule for the start-up rebuild (job.c) and seedreamctl status
 * (control.c). Pure: no I/O, no logging. */
#ifndef SEEDREAMD_SPEND_H
#define SEEDREAMD_SPEND_H

#include <stdint.h>

#include "config.h"
#include "index.h"

/* The images a done record counts: a success's generated images (1 when its
 * answer had no usage), a failure's images paid before it failed (0 for a
 * failure that cost nothing), none for a reused result; at most
 * API_IMAGES_MAX. */
uint64_t spend_entry_images(const struct index_entry *e);

/* The price of one image, in micros, of the model a result was priced by:
 * that model's, else api.model's (records of older versions keep no model),
 * else 0. */
uint64_t spend_price_of(const struct config *config, const char *model);

/* The time a done record counts on (its day and month): when its answer was
 * paid, else (records of older versions) when it finished. */
int64_t spend_entry_paid_at(const struct index_entry *e);

/* spend_entry_images at spend_price_of the record's model, saturating. */
uint64_t spend_entry_cost(const struct config *config, const struct index_entry *e);

#endif
