#include "metrics.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clean.h"
#include "textbuf.h"

struct metrics_series {
	char *labels[2];
	double value;
};

struct metrics_family {
	struct metrics_series *series;
	size_t n, cap;
	size_t n_codes; /* distinct values of a "code" label so far */
};

/* Upper bounds in seconds: generations take seconds to minutes, downloads
 * of a few MB well under a second to tens of seconds. */
static const double generation_bounds[] = {1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300};
static const double download_bounds[] = {0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60};

struct metrics_hist_def {
	const char *name, *help;
	const double *bounds;
	size_t n_bounds;
};

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

static const struct metrics_hist_def hist_defs[METRICS_HISTOGRAM_COUNT] = {
    [METRICS_GENERATION_SECONDS] = {"seedreamd_generation_duration_seconds",
				    "Time from sending a generation request to its answer.",
				    generation_bounds, N_ELEMENTS(generation_bounds)},
    [METRICS_DOWNLOAD_SECONDS] = {"seedreamd_download_duration_seconds",
				  "Time to download a generated result.", download_bounds,
				  N_ELEMENTS(download_bounds)},
};

#define METRICS_BOUNDS_MAX 16

struct metrics_hist {
	uint64_t buckets[METRICS_BOUNDS_MAX]; /* not cumulative: rendering sums them */
	uint64_t count;
	double sum;
};

struct metrics_counter_def {
	const char *name, *help, *labels[2];
};

#define METRICS_DEF(id, name, help, l1, l2) [METRICS_##id] = {name, help, {l1, l2}},
static const struct metrics_counter_def counter_defs[METRICS_COUNTER_COUNT] = {
    METRICS_COUNTERS(METRICS_DEF)};
#undef METRICS_DEF

struct metrics {
	struct metrics_family counters[METRICS_COUNTER_COUNT];
	struct metrics_hist hists[METRICS_HISTOGRAM_COUNT];
};

static struct metrics *registered;

int metrics_new(struct metrics **ret_metrics)
{
	struct metrics *m = calloc(1, sizeof(*m));

	if (!m)
		return -ENOMEM;
	*ret_metrics = m;
	return 0;
}

void metrics_free(struct metrics *m)
{
	if (!m)
		return;
	if (registered == m)
		registered = NULL;
	for (size_t i = 0; i < METRICS_COUNTER_COUNT; i++) {
		for (size_t j = 0; j < m->counters[i].n; j++) {
			free(m->counters[i].series[j].labels[0]);
			free(m->counters[i].series[j].labels[1]);
		}
		free(m->counters[i].series);
	}
	free(m);
}

static size_t metrics_n_labels(enum metrics_counter id)
{
	return counter_defs[id].labels[0] ? (counter_defs[id].labels[1] ? 2 : 1) : 0;
}

static struct metrics_series *metrics_find(const struct metrics_family *fam, size_t n_labels,
					   const char *const *values)
{
	for (size_t i = 0; i < fam->n; i++) {
		bool same = true;
		for (size_t k = 0; k < n_labels && same; k++)
			same = strcmp(fam->series[i].labels[k], values[k]) == 0;
		if (same)
			return &fam->series[i];
	}
	return NULL;
}

static bool metrics_code_known(const struct metrics_family *fam, size_t k, const char *code)
{
	for (size_t i = 0; i < fam->n; i++)
		if (strcmp(fam->series[i].labels[k], code) == 0)
			return true;
	return false;
}

int metrics_count(struct metrics *m, enum metrics_counter id, double value, const char *label1,
		  const char *label2)
{
	struct metrics_family *fam;
	struct metrics_series *s;
	const char *values[2] = {label1 ? label1 : "", label2 ? label2 : ""};
	size_t n_labels;

	if (!m || (unsigned)id >= METRICS_COUNTER_COUNT)
		return -EINVAL;
	fam = &m->counters[id];
	n_labels = metrics_n_labels(id);
	for (size_t k = 0; k < n_labels; k++) {
		/* A code never seen, once the cap is reached, is counted as "other". */
		if (strcmp(counter_defs[id].labels[k], "code") == 0 &&
		    !metrics_code_known(fam, k, values[k])) {
			if (fam->n_codes >= METRICS_CODES_MAX)
				values[k] = "other";
			else
				fam->n_codes++;
		}
	}
	s = metrics_find(fam, n_labels, values);
	if (!s) {
		if (fam->n >= METRICS_SERIES_MAX)
			return -E2BIG;
		if (fam->n == fam->cap) {
			size_t cap = fam->cap ? fam->cap * 2 : 8;
			struct metrics_series *grown =
			    reallocarray(fam->series, cap, sizeof(*grown));
			if (!grown)
				return -ENOMEM;
			fam->series = grown;
			fam->cap = cap;
		}
		s = &fam->series[fam->n];
		*s = (struct metrics_series){0};
		for (size_t k = 0; k < 2; k++) {
			s->labels[k] = strdup(k < n_labels ? values[k] : "");
			if (!s->labels[k]) {
				free(s->labels[0]);
				return -ENOMEM;
			}
		}
		fam->n++;
	}
	s->value += value;
	return 0;
}

double metrics_value(const struct metrics *m, enum metrics_counter id, const char *label1,
		     const char *label2)
{
	const char *values[2] = {label1 ? label1 : "", label2 ? label2 : ""};
	const struct metrics_series *s;

	if (!m || (unsigned)id >= METRICS_COUNTER_COUNT)
		return 0;
	s = metrics_find(&m->counters[id], metrics_n_labels(id), values);
	return s ? s->value : 0;
}

void metrics_observe(struct metrics *m, enum metrics_histogram id, double seconds)
{
	const struct metrics_hist_def *def;
	struct metrics_hist *h;
	size_t i;

	if (!m || (unsigned)id >= METRICS_HISTOGRAM_COUNT || !isfinite(seconds))
		return;
	if (seconds < 0)
		seconds = 0;
	def = &hist_defs[id];
	h = &m->hists[id];
	for (i = 0; i < def->n_bounds && seconds > def->bounds[i]; i++)
		;
	if (i < def->n_bounds)
		h->buckets[i]++;
	h->count++;
	h->sum += seconds;
}

/* ---- rendering ------------------------------------------------------------ */

/* A label value as the format wants it: \\, \" and \n escaped, and valid
 * UTF-8 (a folder name may hold any bytes): others become U+FFFD. */
static void buf_label_value(struct textbuf *b, const char *v)
{
	const unsigned char *p = (const unsigned char *)v;
	size_t n = strlen(v);

	while (n) {
		size_t seq = clean_utf8_seq(p, n);
		if (!seq) {
			textbuf_put(b, "\xef\xbf\xbd", 3);
			p++;
			n--;
			continue;
		}
		if (*p == '\\')
			textbuf_put(b, "\\\\", 2);
		else if (*p == '"')
			textbuf_put(b, "\\\"", 2);
		else if (*p == '\n')
			textbuf_put(b, "\\n", 2);
		else
			textbuf_put(b, (const char *)p, seq);
		p += seq;
		n -= seq;
	}
}

static void buf_header(struct textbuf *b, const char *name, const char *type, const char *help)
{
	textbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A number as the format reads it: integers without an exponent. */
static void buf_number(struct textbuf *b, double v)
{
	if (isnan(v))
		textbuf_put(b, "NaN", 3);
	else if (isinf(v))
		textbuf_printf(b, "%s", v > 0 ? "+Inf" : "-Inf");
	else if (v == floor(v) && fabs(v) < 1e15)
		textbuf_printf(b, "%.0f", v);
	else
		textbuf_printf(b, "%.17g", v);
}

/* name{l1="v1",l2="v2"} value: labels and values in pairs, n of them. */
static void buf_sample(struct textbuf *b, const char *name, size_t n, const char *const *labels,
		       const char *const *values, double value)
{
	textbuf_printf(b, "%s", name);
	for (size_t k = 0; k < n; k++) {
		textbuf_printf(b, "%s%s=\"", k ? "," : "{", labels[k]);
		buf_label_value(b, values[k]);
		textbuf_put(b, "\"", 1);
	}
	if (n)
		textbuf_put(b, "}", 1);
	textbuf_put(b, " ", 1);
	buf_number(b, value);
	textbuf_put(b, "\n", 1);
}

static void render_counters(struct textbuf *b, const struct metrics *m)
{
	for (size_t i = 0; i < METRICS_COUNTER_COUNT; i++) {
		const struct metrics_counter_def *def = &counter_defs[i];
		const struct metrics_family *fam = &m->counters[i];
		size_t n_labels = metrics_n_labels((enum metrics_counter)i);

		buf_header(b, def->name, "counter", def->help);
		if (!n_labels && !fam->n) {
			/* A counter without labels exists from the start, at 0. */
			buf_sample(b, def->name, 0, NULL, NULL, 0);
			continue;
		}
		for (size_t j = 0; j < fam->n; j++)
			buf_sample(b, def->name, n_labels, def->labels,
				   (const char *const *)fam->series[j].labels,
				   fam->series[j].value);
	}
}

static void render_histograms(struct textbuf *b, const struct metrics *m)
{
	for (size_t i = 0; i < METRICS_HISTOGRAM_COUNT; i++) {
		const struct metrics_hist_def *def = &hist_defs[i];
		const struct metrics_hist *h = &m->hists[i];
		uint64_t cumulative = 0;
		char le[32];

		buf_header(b, def->name, "histogram", def->help);
		for (size_t k = 0; k < def->n_bounds; k++) {
			const char *label = "le", *value = le;
			cumulative += h->buckets[k];
			(void)snprintf(le, sizeof(le), "%g", def->bounds[k]);
			textbuf_printf(b, "%s_bucket", def->name);
			buf_sample(b, "", 1, &label, &value, (double)cumulative);
		}
		textbuf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", def->name,
			   (unsigned long long)h->count);
		textbuf_printf(b, "%s_sum ", def->name);
		buf_number(b, h->sum);
		textbuf_printf(b, "\n%s_count %llu\n", def->name, (unsigned long long)h->count);
	}
}

static const char *const pause_names[METRICS_PAUSE_COUNT] = {
    [METRICS_PAUSE_API] = "api_refused",     [METRICS_PAUSE_SPEND_LIMIT] = "image_limit",
    [METRICS_PAUSE_DISK] = "output_storage", [METRICS_PAUSE_STORAGE] = "storage_not_answering",
    [METRICS_PAUSE_STOPPING] = "stopping",   [METRICS_PAUSE_USER] = "user",
};

const char *metrics_pause_name(enum metrics_pause reason)
{
	return (unsigned)reason < METRICS_PAUSE_COUNT ? pause_names[reason] : "unknown";
}

static void render_gauge(struct textbuf *b, const char *name, const char *help, double v)
{
	buf_header(b, name, "gauge", help);
	buf_sample(b, name, 0, NULL, NULL, v);
}

static void render_state(struct textbuf *b, const struct metrics_state *st)
{
	static const char *const folder_label[] = {"folder"};
	static const char *const reason_label[] = {"reason"};
	static const char *const version_label[] = {"version"};

	render_gauge(b, "seedreamd_queued", "Files waiting for a generation slot.",
		     (double)st->queued);
	render_gauge(
	    b, "seedreamd_in_flight",
	    "Files being generated, downloaded or written (holding a slot or a paid result).",
	    (double)st->in_flight);
	render_gauge(b, "seedreamd_waiting_retry", "Files backing off before a retry.",
		     (double)st->waiting);
	render_gauge(b, "seedreamd_settling", "Files found and being checked or settling.",
		     (double)(st->settling + st->fitting));
	render_gauge(b, "seedreamd_twins",
		     "Copies waiting for the result of the same image (paid once).",
		     (double)st->twins);
	render_gauge(b, "seedreamd_oldest_pending_age_seconds",
		     "Age of the oldest file found and not finished (0 when none).",
		     st->oldest_pending_age_s);
	buf_header(b, "seedreamd_paused", "gauge",
		   "1 while new generations are held back for this reason.");
	for (size_t i = 0; i < METRICS_PAUSE_COUNT; i++) {
		const char *reason = pause_names[i];
		buf_sample(b, "seedreamd_paused", 1, reason_label, &reason, st->paused[i] ? 1 : 0);
	}
	buf_header(b, "seedreamd_folder_pending", "gauge",
		   "Files of a folder found and not finished.");
	for (size_t i = 0; i < st->n_folders; i++)
		buf_sample(b, "seedreamd_folder_pending", 1, folder_label, &st->folders[i].path,
			   (double)st->folders[i].pending);
	buf_header(b, "seedreamd_folder_queued", "gauge",
		   "Files of a folder waiting for a generation slot.");
	for (size_t i = 0; i < st->n_folders; i++)
		buf_sample(b, "seedreamd_folder_queued", 1, folder_label, &st->folders[i].path,
			   (double)st->folders[i].queued);
	buf_header(b, "seedreamd_folder_oldest_pending_age_seconds", "gauge",
		   "Age of a folder's oldest file found and not finished (0 when none).");
	for (size_t i = 0; i < st->n_folders; i++)
		buf_sample(b, "seedreamd_folder_oldest_pending_age_seconds", 1, folder_label,
			   &st->folders[i].path, st->folders[i].oldest_age_s);
	buf_header(b, "seedreamd_folder_paused", "gauge",
		   "1 while a folder is missing or unusable, or paused by seedreamctl.");
	for (size_t i = 0; i < st->n_folders; i++)
		buf_sample(b, "seedreamd_folder_paused", 1, folder_label, &st->folders[i].path,
			   st->folders[i].paused ? 1 : 0);
	buf_header(b, "seedreamd_folder_storage_stalled", "gauge",
		   "1 while a folder's storage does not answer.");
	for (size_t i = 0; i < st->n_folders; i++)
		buf_sample(b, "seedreamd_folder_storage_stalled", 1, folder_label,
			   &st->folders[i].path, st->folders[i].stalled ? 1 : 0);
	render_gauge(b, "seedreamd_start_time_seconds",
		     "When the daemon started, in epoch seconds.", st->start_time_s);
	if (st->version) {
		buf_header(b, "seedreamd_build_info", "gauge", "The running version (always 1).");
		buf_sample(b, "seedreamd_build_info", 1, version_label, &st->version, 1);
	}
}

int metrics_render(const struct metrics *m, const struct metrics_state *state, char **ret_text,
		   size_t *ret_len)
{
	struct textbuf b = {0};

	textbuf_reserve(&b, 0);
	if (!b.oom)
		b.p[0] = '\0';
	render_counters(&b, m);
	render_histograms(&b, m);
	if (state)
		render_state(&b, state);
	if (b.oom) {
		free(b.p);
		return -ENOMEM;
	}
	*ret_text = b.p;
	*ret_len = b.len;
	return 0;
}

/* ---- notes from the job code ---------------------------------------------- */

void metrics_register(struct metrics *m)
{
	registered = m;
}

struct metrics *metrics_registered(void)
{
	return registered;
}

/* A note lost to a full table or memory is not worth stopping for: the
 * daemon's work matters more than its counters (the next allocation that
 * matters reports ENOMEM). */
void metrics_note(enum metrics_counter id, double value, const char *l1, const char *l2)
{
	if (registered)
		(void)metrics_count(registered, id, value, l1, l2);
}

void metrics_note_file(const char *folder, const char *result, const char *code)
{
	metrics_note(METRICS_FILES, 1, folder, result);
	if (code)
		metrics_note(METRICS_FILES_FAILED, 1, code, NULL);
}

void metrics_note_answer(long http_status, const char *code, uint64_t bytes_up, uint64_t bytes_down,
			 double seconds)
{
	char status[24];

	(void)snprintf(status, sizeof(status), "%ld", http_status);
	metrics_note(METRICS_API_REQUESTS, 1, status, code ? code : "");
	metrics_note(METRICS_UPLOAD_BYTES, (double)bytes_up, NULL, NULL);
	metrics_note(METRICS_DOWNLOAD_BYTES, (double)bytes_down, NULL, NULL);
	if (registered)
		metrics_observe(registered, METRICS_GENERATION_SECONDS, seconds);
}

void metrics_note_retry(const char *kind)
{
	metrics_note(METRICS_RETRIES, 1, kind, NULL);
}

void metrics_note_usage(int64_t generated_images, int64_t output_tokens)
{
	if (generated_images > 0)
		metrics_note(METRICS_GENERATED_IMAGES, (double)generated_images, NULL, NULL);
	if (output_tokens > 0)
		metrics_note(METRICS_OUTPUT_TOKENS, (double)output_tokens, NULL, NULL);
}

void metrics_note_download(uint64_t bytes, double seconds)
{
	metrics_note(METRICS_DOWNLOAD_BYTES, (double)bytes, NULL, NULL);
	if (registered && seconds >= 0)
		metrics_observe(registered, METRICS_DOWNLOAD_SECONDS, seconds);
}
