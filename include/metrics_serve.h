/* metrics_serve: the two ways out for the metrics text. A tiny HTTP/1.0
 * server on the loop's epoll (GET /metrics; no thread per client, never a
 * blocking call: bounded requests, clients and output, slow ones dropped),
 * and a node_exporter textfile written atomically on a worker every
 * METRICS_TEXTFILE_INTERVAL_MS. Both ask render() for the text, on the loop. */
#ifndef SEEDREAMD_METRICS_SERVE_H
#define SEEDREAMD_METRICS_SERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "loop.h"

#define METRICS_CLIENTS_MAX	     16	   /* at once; more are closed at once */
#define METRICS_REQUEST_MAX	     4096  /* bytes of request line and headers */
#define METRICS_CLIENT_TIMEOUT_MS    10000 /* from accept to the last byte written */
#define METRICS_TEXTFILE_INTERVAL_MS 15000

/* The exposition text: *ret_text (caller frees) of *ret_len bytes. 0 or -errno. */
typedef int (*metrics_render_fn)(void *userdata, char **ret_text, size_t *ret_len);

struct metrics_server;

/* Listens on addr. -errno (the caller logs it, with the address). */
int metrics_server_new(struct loop *loop, const struct sockaddr *addr, socklen_t addr_len,
		       metrics_render_fn render, void *userdata,
		       struct metrics_server **ret_server);
void metrics_server_free(struct metrics_server *server); /* accepts NULL; drops clients */

struct metrics_textfile;

/* Writes path every METRICS_TEXTFILE_INTERVAL_MS (the first at once) through
 * a worker of its own: temp file in the same directory, then rename. */
int metrics_textfile_new(struct loop *loop, const char *path, metrics_render_fn render,
			 void *userdata, struct metrics_textfile **ret_textfile);
/* At exit, after the loop has stopped: waits for a write under way and writes
 * the final values here, on the calling thread. 0 or -errno (caller logs). */
int metrics_textfile_final(struct metrics_textfile *textfile);
void metrics_textfile_free(struct metrics_textfile *textfile); /* accepts NULL */

/* The daemon's text: m's counters and the gauges of jobs and folders now
 * (stopping: SIGTERM received). On the loop thread. 0 or -ENOMEM. */
struct metrics;
struct jobs;
struct folder;
int metrics_jobs_render(struct metrics *m, const struct jobs *jobs, struct folder *const *folders,
			size_t n_folders, bool stopping, double start_time_s, char **ret_text,
			size_t *ret_len);

/* On any thread: text to path atomically (path.tmp, fsync, rename). -errno. */
int metrics_textfile_write(const char *path, const char *text, size_t len);

#endif
