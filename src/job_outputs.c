/* job_outputs: several outputs per request (max_images > 1). The fetch and
 * commit stages of job_result.c handle one image at a time, the one in
 * job->result's url/b64_json/size; these helpers walk job->result.images from
 * one successful entry to the next, name the outputs <stem>-1 .. <stem>-K,
 * keep what was written for the one sidecar that lists them all (written with
 * the last), and give the journal every URL before the first is fetched.
 * Loop thread only. */
#include "job_private.h"

bool job_outputs_several(const struct job *job)
{
	return job->max_images > 1 || job->result.n_images > 1;
}

static void job_outputs_reset(struct job *job)
{
	cJSON_Delete(job->outputs_done);
	job->outputs_done = NULL;
	job->out_done = 0;
	job->out_cur = 0;
}

void job_outputs_clear(struct job *job)
{
	job_outputs_reset(job);
}

/* The index of the first successful entry at or after from, or n_images. */
static size_t job_outputs_find_ok(const struct job *job, size_t from)
{
	size_t i;

	for (i = from; i < job->result.n_images; i++)
		if (!job->result.images[i].error_code)
			break;
	return i;
}

void job_outputs_begin(struct job *job)
{
	job_outputs_reset(job);
	/* api_parse_* copied the first successful entry into result.url etc. */
	job->out_cur = job_outputs_find_ok(job, 0);
}

bool job_outputs_is_last(const struct job *job)
{
	return job_outputs_find_ok(job, job->out_cur + 1) >= job->result.n_images;
}

unsigned job_outputs_number(const struct job *job)
{
	return job->out_done + 1;
}

/* Remembers the output just committed and makes the next successful entry the
 * current image. False when there is none (the one committed was the last). */
bool job_outputs_next(struct job *job, const char *rel_out)
{
	struct api_result *res = &job->result;
	struct api_image *img;
	cJSON *entry;
	size_t next;

	if (!job->outputs_done) {
		job->outputs_done = cJSON_CreateArray();
		if (!job->outputs_done)
			log_oom();
	}
	entry = cJSON_CreateObject();
	if (!entry || !cJSON_AddNumberToObject(entry, "index", (double)job->out_cur) ||
	    !sidecar_add_name(entry, SIDECAR_OUTPUT, rel_out) ||
	    !sidecar_add_string(entry, "size", res->size))
		log_oom();
	cJSON_AddItemToArray(job->outputs_done, entry);
	job->out_done++;

	next = job_outputs_find_ok(job, job->out_cur + 1);
	if (next >= res->n_images)
		return false;
	img = &res->images[next];
	free(res->url);
	free(res->size);
	free(res->b64_json);
	res->url = img->url ? xstrdup(img->url) : NULL;
	res->size = img->size ? xstrdup(img->size) : NULL;
	/* The text may be large: moved, not copied. */
	res->b64_json = img->b64_json;
	img->b64_json = NULL;
	res->b64_streamed = false;
	job->out_cur = next;
	job->fetch_failures = 0; /* each image gets its own tries */
	return true;
}

bool job_outputs_fail_current(struct job *job, const char *code, const char *message)
{
	struct api_result *res = &job->result;
	struct api_image *img;
	size_t next;

	if (!job_outputs_several(job) || job->out_cur >= res->n_images ||
	    res->images[job->out_cur].error_code || res->n_ok <= 1)
		return false; /* one image, or the only one left: the file fails */
	img = &res->images[job->out_cur];
	free(img->b64_json);
	img->b64_json = NULL;
	img->error_code = xstrdup(code ? code : "FetchFailed");
	img->error_message = xstrdup(message ? message : "");
	res->n_ok--;
	free(res->url);
	free(res->size);
	free(res->b64_json);
	res->url = res->size = res->b64_json = NULL;
	res->b64_streamed = false;
	job->fetch_failures = 0;
	next = job_outputs_find_ok(job, job->out_cur + 1);
	if (next >= res->n_images)
		return true; /* the others are written: only the sidecar is left */
	img = &res->images[next];
	res->url = img->url ? xstrdup(img->url) : NULL;
	res->size = img->size ? xstrdup(img->size) : NULL;
	res->b64_json = img->b64_json;
	img->b64_json = NULL;
	job->out_cur = next;
	return true;
}

bool job_outputs_current_failed(const struct job *job)
{
	return job->out_cur < job->result.n_images &&
	       job->result.images[job->out_cur].error_code != NULL;
}

static cJSON *job_outputs_error(size_t index, const struct api_image *img)
{
	cJSON *entry = cJSON_CreateObject(), *err;

	if (!entry || !cJSON_AddNumberToObject(entry, "index", (double)index))
		log_oom();
	err = cJSON_AddObjectToObject(entry, "error");
	if (!err || !sidecar_add_string(err, "code", img->error_code) ||
	    !sidecar_add_string(err, "message", img->error_message))
		log_oom();
	return entry;
}

cJSON *job_outputs_list(const struct job *job, const char *last_rel_out)
{
	const struct api_result *res = &job->result;
	cJSON *list = cJSON_CreateArray(), *entry;
	const cJSON *done = job->outputs_done ? job->outputs_done->child : NULL;

	if (!list)
		log_oom();
	for (size_t i = 0; i < res->n_images; i++) {
		if (res->images[i].error_code) {
			entry = job_outputs_error(i, &res->images[i]);
		} else if (i == job->out_cur) {
			entry = cJSON_CreateObject();
			if (!entry || !cJSON_AddNumberToObject(entry, "index", (double)i) ||
			    !sidecar_add_name(entry, SIDECAR_OUTPUT, last_rel_out) ||
			    !sidecar_add_string(entry, "size", res->size))
				log_oom();
		} else {
			/* Committed before, in the same order. */
			if (!done)
				continue;
			entry = cJSON_Duplicate(done, true);
			done = done->next;
			if (!entry)
				log_oom();
		}
		cJSON_AddItemToArray(list, entry);
	}
	return list;
}

cJSON *job_outputs_journal(const struct job *job)
{
	const struct api_result *res = &job->result;
	cJSON *list;

	if (res->n_images <= 1 && job->max_images <= 1)
		return NULL;
	list = cJSON_CreateArray();
	if (!list)
		log_oom();
	for (size_t i = 0; i < res->n_images; i++) {
		const struct api_image *img = &res->images[i];
		cJSON *entry;

		if (img->error_code) {
			entry = job_outputs_error(i, img);
		} else {
			entry = cJSON_CreateObject();
			if (!entry || !sidecar_add_string(entry, "url", img->url) ||
			    !sidecar_add_string(entry, "size", img->size))
				log_oom();
		}
		cJSON_AddItemToArray(list, entry);
	}
	return list;
}

static char *job_outputs_member(const cJSON *obj, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

	return cJSON_IsString(v) && v->valuestring && v->valuestring[0] ? xstrdup(v->valuestring)
									: NULL;
}

void job_outputs_restore(struct job *job, const cJSON *images, unsigned max_images)
{
	struct api_result *res = &job->result;
	const cJSON *generated = cJSON_GetObjectItemCaseSensitive(res->usage, "generated_images");
	const cJSON *item;
	size_t n = 0;

	job->max_images = max_images ? max_images : 1;
	/* As api_parse_* reads it: the daily count of a restored result. */
	res->generated_images = -1;
	if (cJSON_IsNumber(generated) && generated->valuedouble >= 0 &&
	    generated->valuedouble <= 1e15)
		res->generated_images = (int64_t)generated->valuedouble;
	if (!images)
		return;
	res->images = calloc((size_t)cJSON_GetArraySize(images), sizeof(*res->images));
	if (!res->images)
		log_oom();
	cJSON_ArrayForEach(item, images)
	{
		struct api_image *img = &res->images[n++];
		const cJSON *err = cJSON_GetObjectItemCaseSensitive(item, "error");

		img->url = err ? NULL : job_outputs_member(item, "url");
		img->size = err ? NULL : job_outputs_member(item, "size");
		if (img->url) {
			res->n_ok++;
			continue;
		}
		img->error_code = job_outputs_member(err, "code");
		img->error_message = job_outputs_member(err, "message");
		if (!img->error_code)
			img->error_code = xstrdup("MalformedResponse");
	}
	res->n_images = n;
	if (res->n_ok == 0) {
		/* Not written by us (every paid answer has an image): the record's
		 * url alone is the result, as in records of one output. */
		api_result_clear_images(res);
		return;
	}
	job_outputs_begin(job);
	if (job->out_cur < n) {
		/* The record's url is the first image: make that the current one. */
		free(res->url);
		free(res->size);
		res->url = xstrdup(res->images[job->out_cur].url);
		res->size =
		    res->images[job->out_cur].size ? xstrdup(res->images[job->out_cur].size) : NULL;
	}
}

void job_outputs_note_relay(struct job *job)
{
	const struct api_result *res = &job->result;
	struct folder *folder = job->folder;

	job->max_images = job->sched_images ? job->sched_images : 1;
	job_outputs_begin(job);
	/* A relay may return more images than asked: stems chosen from now on
	 * keep clear of their names too. */
	if (res->n_images > job->stem_outputs)
		job->stem_outputs = (unsigned)res->n_images;
	/* Once per folder: a relay that drops fields does so for every file. */
	if (!res->usage && !folder->warned_no_usage) {
		folder->warned_no_usage = true;
		log_warn("%s: the API's answer for %s had no usage (a relay may drop it); its "
			 "sidecar says \"usage\": null and images are counted from data[] (%zu)",
			 folder->cfg->path, job->rel, res->n_ok);
	}
	if (job->max_images > 1 && res->n_images < job->max_images && !folder->warned_few_images) {
		folder->warned_few_images = true;
		log_warn("%s: asked for up to %u images for %s and got %zu (the model may make "
			 "fewer, or a relay ignores sequential_image_generation)",
			 folder->cfg->path, job->max_images, job->rel, res->n_images);
	}
}
