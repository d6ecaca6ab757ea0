#include "spend.h"

#include "api.h"
#include "schedule.h"

uint64_t spend_entry_images(const struct index_entry *e)
{
	uint64_t images;

	if (e->reused)
		return 0;
	if (e->failed)
		images = e->generated_images > 0 ? (uint64_t)e->generated_images : 0;
	else
		images = e->generated_images > 0 ? (uint64_t)e->generated_images : 1;
	/* A record rebuilt from a sidecar may hold a server's claim verbatim. */
	return images > API_IMAGES_MAX ? API_IMAGES_MAX : images;
}

uint64_t spend_price_of(const struct config *config, const char *model)
{
	uint64_t price = 0;

	if (model && config_price_of(config, model, &price) == 0)
		return price;
	if (config_price_of(config, config->api.model, &price) == 0)
		return price;
	return 0;
}

int64_t spend_entry_paid_at(const struct index_entry *e)
{
	return e->paid_at > 0 ? e->paid_at : e->finished_at;
}

uint64_t spend_entry_cost(const struct config *config, const struct index_entry *e)
{
	return sched_mul_sat(spend_entry_images(e), spend_price_of(config, e->model));
}
