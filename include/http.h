/* http: libcurl's multi socket interface wired into the loop (one multi
 * handle, keep-alive reuse, HTTP/2 multiplexing where offered). Callers set up
 * easy handles; this module only runs them and reports completion. */
#ifndef SEEDREAMD_HTTP_H
#define SEEDREAMD_HTTP_H

#include <curl/curl.h>

#include "loop.h"

struct http;

/* Called once per finished transfer, after the handle left the multi handle;
 * the callee owns the easy handle again. */
typedef void (*http_done_fn)(CURL *easy, CURLcode result, void *userdata);

int http_new(struct loop *loop, struct http **ret_http);
void http_free(struct http *http); /* accepts NULL; cancels what still runs */

/* Starts a transfer. CURLOPT_PRIVATE is used by this module. */
int http_start(struct http *http, CURL *easy, http_done_fn fn, void *userdata);

/* Stops a transfer without calling its done callback. */
void http_cancel(struct http *http, CURL *easy);

unsigned http_running(const struct http *http);

#endif
