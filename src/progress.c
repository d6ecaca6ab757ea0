#include "progress.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "log.h"

struct progress {
	struct loop *loop;
	struct loop_timer *timer;
	progress_counts_fn counts;
	void *userdata;
	bool tty;
	uint64_t started; /* monotonic ms */
	char shown[512];
};

static void progress_duration(double s, char *buf, size_t len)
{
	unsigned long long t = (unsigned long long)(s + 0.5);

	if (t >= 3600)
		(void)snprintf(buf, len, "%lluh%02llum", t / 3600, t / 60 % 60);
	else if (t >= 60)
		(void)snprintf(buf, len, "%llum%02llus", t / 60, t % 60);
	else
		(void)snprintf(buf, len, "%llus", t);
}

void progress_format(const struct progress_counts *c, double elapsed_s, char *buf, size_t len)
{
	uint64_t finished = c->done + c->skipped + c->failed + c->left;
	uint64_t total = finished + c->pending;
	uint64_t worked = c->done + c->failed; /* what the rate is of: sent to the API */
	double per_min = elapsed_s > 0 ? (double)worked * 60.0 / elapsed_s : 0;
	char eta[32];

	if (!c->pending)
		(void)snprintf(eta, sizeof(eta), "0s");
	else if (per_min > 0)
		progress_duration((double)c->pending * 60.0 / per_min, eta, sizeof(eta));
	else
		(void)snprintf(eta, sizeof(eta), "unknown");
	(void)snprintf(buf, len,
		       "%llu/%llu done, %llu failed, %zu in flight, %.1f images/min, ETA %s, "
		       "%llu images paid",
		       (unsigned long long)(c->done + c->skipped), (unsigned long long)total,
		       (unsigned long long)c->failed, c->in_flight, per_min, eta,
		       (unsigned long long)c->paid);
}

static void progress_text(struct progress *p, char *buf, size_t len)
{
	struct progress_counts c = {0};

	p->counts(p->userdata, &c);
	progress_format(&c, (double)(loop_now_ms() - p->started) / 1000.0, buf, len);
}

static void progress_draw(struct progress *p)
{
	char text[sizeof(p->shown)];
	struct winsize ws;

	progress_text(p, text, sizeof(text));
	/* A line that wraps cannot be redrawn in place: cut it to the width. */
	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 &&
	    strlen(text) >= ws.ws_col)
		text[ws.ws_col - 1] = '\0';
	if (strcmp(text, p->shown) == 0)
		return;
	memcpy(p->shown, text, sizeof(text));
	log_status_line(text);
}

static void progress_tick(void *userdata)
{
	struct progress *p = userdata;

	if (p->tty) {
		progress_draw(p);
		(void)loop_timer_arm(p->timer, PROGRESS_REDRAW_MS);
	} else {
		char text[512];
		progress_text(p, text, sizeof(text));
		log_info("progress: %s", text);
		(void)loop_timer_arm(p->timer, PROGRESS_LOG_INTERVAL_MS);
	}
}

int progress_new(struct loop *loop, progress_counts_fn counts, void *userdata,
		 struct progress **ret_progress)
{
	struct progress *p = calloc(1, sizeof(*p));
	int r;

	if (!p)
		return -ENOMEM;
	p->loop = loop;
	p->counts = counts;
	p->userdata = userdata;
	p->tty = log_status_line_possible();
	p->started = loop_now_ms();
	r = loop_timer_new(loop, progress_tick, p, &p->timer);
	if (r >= 0)
		r = loop_timer_arm(p->timer, p->tty ? 0 : PROGRESS_LOG_INTERVAL_MS);
	if (r < 0) {
		progress_free(p);
		return r;
	}
	*ret_progress = p;
	return 0;
}

void progress_finish(struct progress *p)
{
	if (!p)
		return;
	loop_timer_disarm(p->timer);
	if (p->tty) {
		progress_draw(p);
		log_status_line_keep();
	}
	/* Not on a terminal, the summary log line that follows says it all. */
}

void progress_free(struct progress *p)
{
	if (!p)
		return;
	loop_timer_free(p->loop, p->timer);
	free(p);
}
