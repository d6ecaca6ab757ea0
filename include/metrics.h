/* metrics: the daemon's Prometheus counters and histograms, and the text
 * exposition format (version 0.0.4) they are rendered in. Pure: no I/O, no
 * logging, no locks. The counters are changed only on the loop thread (from
 * the job code, through the metrics_note_* calls on the one registered set);
 * gauges are not kept here but computed when a scrape renders them. */
#ifndef SEEDREAMD_METRICS_H
#define SEEDREAMD_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Distinct error codes kept per metric: a server chooses them, so more
 * than this are counted under code="other". */
#define METRICS_CODES_MAX 32
/* Distinct label sets per metric (folders come and go with reloads). */
#define METRICS_SERIES_MAX 1024

/* Every counter: id, name, help, and up to two label names (NULL for none).
 * Adding a counter is one line here and a metrics_count call where it
 * happens. A label named "code" is capped at METRICS_CODES_MAX values. */
#define METRICS_COUNTERS(X)                                                                        \
	X(FILES, "seedreamd_files_total",                                                          \
	  "Files finished, by folder and result (done, failed, skipped: already done, "            \
	  "left: for a later run).",                                                               \
	  "folder", "result")                                                                      \
	X(FILES_FAILED, "seedreamd_file_failures_total",                                           \
	  "Files that failed for good, by error code.", "code", NULL)                              \
	X(API_REQUESTS, "seedreamd_api_requests_total",                                            \
	  "Generation requests answered (or not: status 0), by HTTP status and API error code.",   \
	  "status", "code")                                                                        \
	X(RETRIES, "seedreamd_retries_total",                                                      \
	  "Retries scheduled, by what is retried (generation or fetch).", "kind", NULL)            \
	X(UPLOAD_BYTES, "seedreamd_upload_bytes_total", "Bytes sent in generation requests.",      \
	  NULL, NULL)                                                                              \
	X(DOWNLOAD_BYTES, "seedreamd_download_bytes_total",                                        \
	  "Bytes received: generation answers and downloaded results.", NULL, NULL)                \
	X(GENERATED_IMAGES, "seedreamd_generated_images_total",                                    \
	  "Images generated (billed): usage.generated_images, 1 without usage.", NULL, NULL)       \
	X(OUTPUT_TOKENS, "seedreamd_output_tokens_total",                                          \
	  "Output tokens, from usage.output_tokens.", NULL, NULL)                                  \
	X(ESTIMATED_COST, "seedreamd_estimated_cost_total",                                        \
	  "Estimated cost of the images generated (price_per_image), in the currency named.",      \
	  "currency", NULL)

#define METRICS_ENUM_ID(id, name, help, l1, l2) METRICS_##id,
enum metrics_counter { METRICS_COUNTERS(METRICS_ENUM_ID) METRICS_COUNTER_COUNT };
#undef METRICS_ENUM_ID

enum metrics_histogram {
	METRICS_GENERATION_SECONDS, /* request sent -> answer */
	METRICS_DOWNLOAD_SECONDS,   /* result download */
	METRICS_HISTOGRAM_COUNT
};

struct metrics;

int metrics_new(struct metrics **ret_metrics); /* 0 or -ENOMEM */
void metrics_free(struct metrics *m);	       /* accepts NULL */

/* Adds value to a counter's series with these label values (as many as the
 * counter has labels; NULL is taken as ""). -ENOMEM; a series past
 * METRICS_SERIES_MAX is not counted (-E2BIG). */
int metrics_count(struct metrics *m, enum metrics_counter id, double value, const char *label1,
		  const char *label2);
/* A counter series' value (0 when absent): for tests. */
double metrics_value(const struct metrics *m, enum metrics_counter id, const char *label1,
		     const char *label2);
void metrics_observe(struct metrics *m, enum metrics_histogram id, double seconds);

/* What is true now, computed by the caller at render time. */
struct metrics_folder_state {
	const char *path;
	size_t pending;	     /* found and not finished */
	size_t queued;	     /* waiting for a generation slot */
	double oldest_age_s; /* of its oldest pending file, 0 if none */
	bool paused;	     /* missing or unusable, or paused by seedreamctl */
	bool stalled;	     /* its storage does not answer */
};

/* Reasons the whole daemon holds back new generations. */
enum metrics_pause {
	METRICS_PAUSE_API,	   /* the API refused the account or configuration */
	METRICS_PAUSE_SPEND_LIMIT, /* a daily or per-minute image limit */
	METRICS_PAUSE_DISK,	   /* writing outputs fails or space is low */
	METRICS_PAUSE_STORAGE,	   /* a folder's storage does not answer */
	METRICS_PAUSE_STOPPING,	   /* SIGTERM: finishing what is in flight */
	METRICS_PAUSE_USER,	   /* seedreamctl pause (of every folder) */
	METRICS_PAUSE_COUNT
};

struct metrics_state {
	size_t queued, in_flight, waiting, settling, fitting;
	size_t twins; /* copies waiting for the result of the same image */
	double oldest_pending_age_s;
	bool paused[METRICS_PAUSE_COUNT];
	const struct metrics_folder_state *folders;
	size_t n_folders;
	double start_time_s; /* epoch seconds */
	const char *version;
};

/* The exposition text of m and state: *ret_text (NUL-terminated, caller
 * frees) of *ret_len bytes. Label values are escaped (\\, \", \n) and made
 * valid UTF-8; histogram buckets are cumulative and end in +Inf, with _sum
 * and _count. 0 or -ENOMEM. */
int metrics_render(const struct metrics *m, const struct metrics_state *state, char **ret_text,
		   size_t *ret_len);

const char *metrics_pause_name(enum metrics_pause reason);

/* The set the job code's notes go to (NULL: notes are dropped). Loop thread. */
void metrics_register(struct metrics *m);
struct metrics *metrics_registered(void);

/* Notes from the job code, on the loop thread, to the registered set. */
void metrics_note(enum metrics_counter id, double value, const char *label1, const char *label2);
void metrics_note_file(const char *folder, const char *result, const char *code);
void metrics_note_answer(long http_status, const char *code, uint64_t bytes_up, uint64_t bytes_down,
			 double seconds);
void metrics_note_retry(const char *kind);
void metrics_note_usage(int64_t generated_images, int64_t output_tokens);
/* seconds < 0: the download failed, only its bytes count. */
void metrics_note_download(uint64_t bytes, double seconds);

#endif
