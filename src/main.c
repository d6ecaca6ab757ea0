/* seedreamd: hot folders in, Seedream image-to-image results out.
 * main: options, the API key, signals, the folders, reload and shutdown. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "config.h"
#include "events.h"
#include "control.h"
#include "fit.h"
#include "folder.h"
#include "folder_intake.h"
#include "http.h"
#include "index.h"
#include "job.h"
#include "journal.h"
#include "ledger.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "metrics_serve.h"
#include "notify.h"
#include "output.h"
#include "progress.h"
#include "watch.h"
#include "work.h"

#define API_KEY_MAX 4096

struct daemon {
	const char *config_path;
	bool once;
	struct config *config;
	struct config **retired;   /* replaced by reloads, still referenced by busy folders */
	size_t n_retired;
	struct loop *loop;
	struct http *http;
	struct jobs *jobs;
	struct events *events;     /* NULL without a notify: section */
	struct watch *watch;
	struct folder **folders;
	size_t n_folders;
	int signal_fd;
	int lock_fd;               /* flock on <state_dir>/lock: one daemon per state */
	struct journal *journal;
	struct ledger *ledger; /* every paid answer; NULL: none */
	struct work_pool *index_pool;	/* writes the done-record caches while running */
	/* Reads the config of a reload: its references may sit on a share that
	 * stopped answering, which must not freeze the loop. */
	struct work_pool *reload_pool;
	bool reload_running, reload_again, reload_closing;
	/* Sweeps and reads the done records of folders a reload adds: their
	 * output may sit on a share that hangs (folder_intake.h). */
	struct work_pool *intake_pool;
	struct journal_record *pending; /* journalled results not yet handed to a folder */
	struct control *control;	/* the control socket (seedreamctl); NULL when off */
	size_t n_pending;
	struct loop_source *signal_source;
	struct loop_timer *status_timer, *rescan_timer, *watchdog_timer, *stop_timer;
	uint64_t watchdog_ms, watchdog_last_iterations;
	struct metrics *metrics;
	struct metrics_server *metrics_server;
	struct metrics_textfile *metrics_textfile;
	struct progress *progress; /* --once */
	double start_time_s;
	bool stopping, done;
	int exit_code;
};

static void usage(FILE *out)
{
	(void)fprintf(out,
		      "Usage: seedreamd [-c FILE] [--check] [--once] [-v|-q] [--version] [--help]\n"
		      "\n"
		      "Watches hot folders and sends each new image, with its folder's prompt,\n"
		      "to the Seedream image-to-image API; writes the result and a sidecar JSON\n"
		      "into the folder's output folder.\n"
		      "\n"
		      "  -c, --config FILE  configuration (default " CONFIG_DEFAULT_PATH ")\n"
		      "      --check        validate the configuration and exit 0 or 1\n"
		      "      --once         process what is in the folders now, then exit:\n"
		      "                     0 if every file succeeded, 1 otherwise\n"
		      "  -v, --verbose      debug logging\n"
		      "  -q, --quiet        warnings and errors only\n"
		      "      --version      print the version\n"
		      "  -h, --help         this text\n");
}

/* ---- the API key ------------------------------------------------------ */

/* Never logs (a reload reads the key on a worker): *ret_loose_mode gets the
 * file's mode when group or others may read it, else 0. */
static int read_key_file(const char *path, char *key, size_t keylen, unsigned *ret_loose_mode)
{
	struct stat st;
	ssize_t n;
	int fd, r = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto out;
	}
	if (st.st_mode & 077)
		*ret_loose_mode = (unsigned)(st.st_mode & 07777);
	n = read(fd, key, keylen - 1);
	if (n < 0) {
		r = -errno;
		goto out;
	}
	key[n] = '\0';
	key[strcspn(key, "\r\n")] = '\0';
	if (!key[0])
		r = -ENODATA;
out:
	close(fd);
	return r;
}

/* api_key_file, else the environment variable, else systemd's credential.
 * Never logs: on a worker at a reload (the file may sit on a share that
 * hangs). -ENOKEY when none is there; *ret_loose_mode as read_key_file's
 * for api_key_file. */
static int find_api_key(const struct config *config, char *key, size_t keylen,
			unsigned *ret_loose_mode)
{
	const char *env, *creds;
	char path[4096];
	unsigned credential_mode = 0; /* systemd makes the copy: its mode is not the user's */

	*ret_loose_mode = 0;
	if (config->api.api_key_file)
		return read_key_file(config->api.api_key_file, key, keylen, ret_loose_mode);
	env = config->api.api_key_env ? getenv(config->api.api_key_env) : NULL;
	if (env && env[0]) {
		if (strlen(env) >= keylen)
			return -E2BIG;
		strcpy(key, env);
		return 0;
	}
	creds = getenv("CREDENTIALS_DIRECTORY");
	if (creds) {
		(void)snprintf(path, sizeof(path), "%s/api_key", creds);
		if (read_key_file(path, key, keylen, &credential_mode) == 0)
			return 0;
	}
	return -ENOKEY;
}

/* What find_api_key's caller logs about its result. */
static void log_api_key(const struct config *config, int r, unsigned loose_mode)
{
	if (loose_mode)
		log_warn("API key file %s is readable by group or others (mode %04o); "
			 "chmod 600 it",
			 config->api.api_key_file, loose_mode);
	if (r == -ENOKEY)
		log_error("no API key: set %s, or api.api_key_file, or a systemd credential "
			  "named api_key",
			  config->api.api_key_env ? config->api.api_key_env : "SEEDREAM_API_KEY");
	else if (r < 0 && config->api.api_key_file)
		log_error("cannot read the API key from %s: %s", config->api.api_key_file,
			  strerror(-r));
}

static int load_api_key(const struct config *config, char *key, size_t keylen)
{
	unsigned loose_mode;
	int r = find_api_key(config, key, keylen, &loose_mode);

	log_api_key(config, r, loose_mode);
	return r;
}

/* ---- status and timers ------------------------------------------------ */

/* How many folders are paused; *ret_first gets the first of them. */
static size_t folders_missing(const struct daemon *d, const struct folder **ret_first)
{
	size_t n = 0;

	*ret_first = NULL;
	for (size_t i = 0; i < d->n_folders; i++) {
		if (!d->folders[i]->present && !d->folders[i]->removed) {
			if (!n)
				*ret_first = d->folders[i];
			n++;
		}
	}
	return n;
}

/* How many folders' storage does not answer; *ret_first gets the one silent longest. */
static size_t folders_stalled(const struct daemon *d, const struct folder **ret_first)
{
	size_t n = 0;

	*ret_first = NULL;
	for (size_t i = 0; i < d->n_folders; i++) {
		const struct folder *f = d->folders[i];
		if (!f->look_stalled_since || f->removed)
			continue;
		if (!*ret_first || f->look_stalled_since < (*ret_first)->look_stalled_since)
			*ret_first = f;
		n++;
	}
	return n;
}

/* "; paused by seedreamctl ..." for STATUS=, or "". */
static void daemon_user_pauses(const struct daemon *d, char *buf, size_t len)
{
	const struct folder *first = NULL;
	size_t n = 0;

	if (jobs_user_paused(d->jobs)) {
		(void)snprintf(buf, len, "; every folder paused by seedreamctl");
		return;
	}
	for (size_t i = 0; i < d->n_folders; i++) {
		if (d->folders[i]->user_paused && !d->folders[i]->removed) {
			if (!n)
				first = d->folders[i];
			n++;
		}
	}
	if (first)
		(void)snprintf(buf, len, "; folder %s paused by seedreamctl%s", first->cfg->path,
			       n > 1 ? " (and other folders)" : "");
}

static void daemon_check_done(struct daemon *d)
{
	struct jobs_counts c;

	jobs_counts(d->jobs, &c);
	if (d->once && (jobs_idle(d->jobs) || (c.paused && jobs_quiet(d->jobs)) ||
			jobs_held_by_limits(d->jobs)))
		d->done = true;
	if (d->stopping && jobs_quiet(d->jobs))
		d->done = true;
}

/* A --once run tells its webhook and command what happened (a file that
 * failed, a limit reached) before it exits: events still queued, retried or
 * running get up to DAEMON_ONCE_EVENTS_MS more. A stop signal ends the wait. */
#define DAEMON_ONCE_EVENTS_MS 30000

static int daemon_deliver_events(struct daemon *d)
{
	uint64_t until = loop_now_ms() + DAEMON_ONCE_EVENTS_MS;
	int r;

	if (!d->once || !d->events || !events_pending(d->events))
		return 0;
	log_info("waiting up to %d s for %u notification(s) to be delivered",
		 DAEMON_ONCE_EVENTS_MS / 1000, events_pending(d->events));
	while (events_pending(d->events) && !d->stopping) {
		uint64_t now = loop_now_ms();
		if (now >= until) {
			log_warn("%u notification(s) not delivered before the end of the run",
				 events_pending(d->events));
			break;
		}
		r = loop_run_once(d->loop, (int)(until - now));
		if (r < 0)
			return r;
	}
	return 0;
}

static void daemon_status(void *userdata)
{
	struct daemon *d = userdata;
	struct jobs_counts c;
	const struct folder *first;
	size_t missing = folders_missing(d, &first), stalled;
	char paused[700] = "", silent[700] = "", user[700] = "", twins[64] = "";
	uint64_t again;

	if (missing)
		(void)snprintf(paused, sizeof(paused), "; folder %s paused: %s%s", first->cfg->path,
			       first->pause_reason[0] ? first->pause_reason : "missing",
			       missing > 1 ? " (and other folders)" : "");
	stalled = folders_stalled(d, &first);
	if (stalled)
		(void)snprintf(silent, sizeof(silent), "; folder %s not answering for %llu s%s",
			       first->cfg->path,
			       (unsigned long long)(loop_now_ms() - first->look_stalled_since) /
				   1000,
			       stalled > 1 ? " (and other folders)" : "");
	daemon_user_pauses(d, user, sizeof(user));
	jobs_counts(d->jobs, &c);
	if (c.twins)
		(void)snprintf(twins, sizeof(twins), "; %zu copies waiting for the same image",
			       c.twins);
	again = notify_status("%s%zu queued, %zu in flight, %zu waiting to retry, %llu done, "
			      "%llu failed%s%s%s%s%s%s%s%s%s%s%s%s",
			      d->stopping ? "stopping: " : "", c.queued + c.settling + c.fitting,
			      c.in_flight,
			      c.waiting, (unsigned long long)c.done, (unsigned long long)c.failed, twins,
			      c.pause_reason ? "; " : "", c.pause_reason ? c.pause_reason : "",
			      c.limit_reason ? "; " : "", c.limit_reason ? c.limit_reason : "",
			      c.disk_reason ? "; " : "", c.disk_reason ? c.disk_reason : "",
			      c.storage_reason ? "; " : "",
			      c.storage_reason ? c.storage_reason : "", paused, silent, user);
	if (again && !loop_timer_armed(d->status_timer))
		(void)loop_timer_arm(d->status_timer, again);
	daemon_check_done(d);
}

/* Puts and removes after which a running daemon writes a folder's done-record
 * cache again, so a crash does not lose what a clean stop would have kept. */
#define INDEX_CACHE_SAVE_CHANGES 5000

static void daemon_index_saved(struct folder *f, int result, void *userdata)
{
	(void)userdata;
	if (result < 0 && result != -ECANCELED)
		log_warn("folder %s: cannot write the done-record cache: %s", f->cfg->path,
			 strerror(-result));
}

/* On a worker: the copy of the index is taken here, the writing is not. */
static void daemon_save_changed_indexes(struct daemon *d)
{
	for (size_t i = 0; d->index_pool && i < d->n_folders; i++) {
		struct folder *f = d->folders[i];
		int r;

		if (f->removed || f->index_stale || f->index_saving || !f->state_dir ||
		    index_changes(f->index) - f->index_changes_saved < INDEX_CACHE_SAVE_CHANGES)
			continue;
		r = folder_save_index_cache_async(f, d->index_pool, daemon_index_saved, d);
		if (r == -ENOMEM)
			log_oom();
		if (r < 0)
			log_warn("folder %s: cannot write the done-record cache: %s", f->cfg->path,
				 strerror(-r));
	}
}

static void daemon_rescan(void *userdata)
{
	struct daemon *d = userdata;

	daemon_save_changed_indexes(d);
	watch_rescan(d->watch, d->folders, d->n_folders);
	(void)loop_timer_arm(d->rescan_timer, d->config->rescan_interval_ms);
}

static void daemon_watchdog(void *userdata)
{
	struct daemon *d = userdata;

	/* The timer itself is an iteration: a loop that dispatches it is alive. */
	notify_watchdog();
	d->watchdog_last_iterations = loop_iterations(d->loop);
	(void)loop_timer_arm(d->watchdog_timer, d->watchdog_ms / 2);
}

static void daemon_stop_timeout(void *userdata)
{
	struct daemon *d = userdata;
	struct jobs_counts c;

	jobs_counts(d->jobs, &c);
	log_warn("stop_timeout reached with %zu transfer(s) in flight; they resume at the next "
		 "start",
		 c.in_flight);
	if (c.undurable)
		log_error("%zu paid result(s) could be neither journalled nor written out before "
			  "stop_timeout; they are lost, and their files will be paid for again",
			  c.undurable);
	d->done = true;
}

/* ---- folders ---------------------------------------------------------- */

static void on_file(void *userdata, struct folder *folder, const char *rel, const struct stat *st,
		    enum watch_how how)
{
	struct daemon *d = userdata;

	jobs_offer(d->jobs, folder, rel, st, how);
}

static void on_removed(void *userdata, struct folder *folder, const char *rel)
{
	struct daemon *d = userdata;

	jobs_removed(d->jobs, folder, rel);
}

static void on_prompt_file(void *userdata, struct folder *folder, const char *rel,
			   enum watch_how how)
{
	struct daemon *d = userdata;

	jobs_prompt_file_arrived(d->jobs, folder, rel, how);
}

/* Paused or resumed: say so, and let held jobs of a resumed folder go on. */
static void on_folder_changed(void *userdata, struct folder *folder)
{
	struct daemon *d = userdata;

	jobs_folder_changed(d->jobs, folder);
	daemon_status(d);
}

static void daemon_folder_count_today(struct daemon *d, struct folder *f);

/* Its done records were read again by the watch (its output came back as
 * another directory, or an intake left them stale). */
static void on_records_read(void *userdata, struct folder *folder)
{
	daemon_folder_count_today(userdata, folder);
}

/* Its storage stopped answering, still does not, or answers again. */
static void on_folder_stalled(void *userdata, struct folder *folder)
{
	(void)folder;
	daemon_status(userdata);
}

static const struct watch_events daemon_watch_events = {
	.file = on_file,
	.removed = on_removed,
	.prompt_file = on_prompt_file,
	.changed = on_folder_changed,
	.stalled = on_folder_stalled,
	.records_read = on_records_read,
};

/* A folder with no done records read yet. */
static struct folder *folder_new_empty(const struct folder_config *cfg, const char *state_dir)
{
	struct folder *f = calloc(1, sizeof(*f));

	if (!f)
		log_oom();
	f->cfg = cfg;
	f->root_wd = -1;
	/* Not missing until the watcher finds it so: jobs restored before watch_add_folder()
	 * update STATUS=, which must not say "a watched folder is missing" meanwhile. */
	f->present = true;
	if (state_dir && !(f->state_dir = strdup(state_dir)))
		log_oom();
	if (index_new(&f->index) < 0)
		log_oom();
	return f;
}

/* How reading the done records went, once they are in (at start or after a reload). */
static void folder_log_records(const struct folder *f, int r, size_t skipped,
			       const struct index_load_stats *stats)
{
	const struct folder_config *cfg = f->cfg;
	char cache[PATH_MAX + 64];

	if (r == -ENOMEM)
		log_oom();
	if (r < 0)
		log_warn("folder %s: cannot read the output folder %s: %s", cfg->path, cfg->output,
			 strerror(-r));
	folder_index_cache_file(f, cache, sizeof(cache));
	if (cache[0] && stats->cache_result < 0 && stats->cache_result != -ENOENT)
		log_info("folder %s: the done-record cache %s is not usable (%s): reading the "
			 "sidecars",
			 cfg->path, cache,
			 stats->cache_result == -EINVAL ? "damaged or of another version"
							: strerror(-stats->cache_result));
	log_debug("folder %s: %zu done record(s) in %s (%zu folder(s) from the cache, %zu read, "
		  "%zu sidecar(s) read)%s",
		  cfg->path, index_count(f->index), cfg->output, stats->dirs_cached,
		  stats->dirs_read, stats->sidecars_read,
		  skipped ? " (some JSON files there are not sidecars)" : "");
}

static struct folder *folder_new(const struct folder_config *cfg, const char *state_dir)
{
	struct folder *f = folder_new_empty(cfg, state_dir);
	struct index_load_stats stats = {0};
	char cache[PATH_MAX + 64];
	size_t skipped = 0;
	int r;

	folder_index_cache_file(f, cache, sizeof(cache));
	r = index_load_tree_cached(f->index, cfg->output, cfg->done_dir, cache[0] ? cache : NULL,
				   &skipped, &stats);
	folder_log_records(f, r, skipped, &stats);
	f->index_changes_saved = index_changes(f->index);
	return f;
}

static void folder_free(struct folder *f)
{
	if (!f)
		return;
	index_free(f->index);
	folder_clear_ids(f);
	free(f);
}

/* What its done records say it paid today: once, and only from records
 * really read (a stale index may lack them: the watch reads them again and
 * calls on_records_read). */
static void daemon_folder_count_today(struct daemon *d, struct folder *f)
{
	if (f->today_counted || f->index_stale)
		return;
	jobs_count_today(d->jobs, f);
	f->today_counted = true;
}

/* Once a folder's done records are in (or their read failed, leaving them
 * stale): what it paid today, and its paid-for results from the journal,
 * before any scan (which finds their jobs there). */
static void daemon_folder_records_in(struct daemon *d, struct folder *f)
{
	daemon_folder_count_today(d, f);
	f->records_in = true;
	for (size_t i = 0; i < d->n_pending; i++) {
		if (d->pending[i].folder && strcmp(d->pending[i].folder, f->cfg->path) == 0) {
			jobs_restore(d->jobs, f, &d->pending[i]);
			journal_record_clear(&d->pending[i]);
		}
	}
}

/* At start, before READY: the loop may wait on storage here (documented). */
static int daemon_add_folder(struct daemon *d, const struct folder_config *cfg)
{
	struct folder **fs = reallocarray(d->folders, d->n_folders + 1, sizeof(*fs));
	struct folder *f;
	size_t swept = 0;

	if (!fs)
		log_oom();
	d->folders = fs;
	/* Temporary files of an interrupted run: never a partial file left behind. */
	if (output_sweep_tmp(cfg->output, &swept) == 0 && swept)
		log_info("folder %s: removed %zu temporary file(s) left by an interrupted run",
			 cfg->path, swept);
	f = folder_new(cfg, d->journal ? d->config->state_dir : NULL);
	d->folders[d->n_folders++] = f;
	daemon_folder_records_in(d, f);
	return watch_add_folder(d->watch, f);
}

static int daemon_intake_folder(struct daemon *d, struct folder *f);

/* On the loop: the sweep and the done records of a folder a reload added
 * are in; now it may be watched. */
static void daemon_folder_intake_done(struct folder *f, const struct folder_intake_result *res,
				      void *userdata)
{
	struct daemon *d = userdata;
	int r;

	if (res->result == -ECANCELED || f->removed || d->stopping)
		return; /* stopping, or dropped by a reload meanwhile (reaped once idle) */
	if (res->sweep_result == 0 && res->swept)
		log_info("folder %s: removed %zu temporary file(s) left by an interrupted run",
			 f->cfg->path, res->swept);
	if (res->result == -ESTALE) {
		/* A later reload gave it another output: read that one. */
		r = daemon_intake_folder(d, f);
		if (r == -ENOMEM)
			log_oom();
		if (r >= 0)
			return;
		log_warn("folder %s: cannot read the output folder %s: %s", f->cfg->path,
			 f->cfg->output, strerror(-r));
	} else if (res->result == -EAGAIN) {
		/* Judged away or replaced while read: as on an error below. */
		log_info("folder %s: the output %s was away or replaced while its done records "
			 "were read; they are read again before the folder starts",
			 f->cfg->path, f->cfg->output);
	} else {
		/* On an error the records stay stale: the watch reads them again
		 * before it starts the folder, and pauses it if that fails too. */
		folder_log_records(f, res->result, res->skipped, &res->stats);
	}
	daemon_folder_records_in(d, f);
	watch_rescan(d->watch, &f, 1); /* its start waited for the records */
	daemon_status(d);
}

static int daemon_intake_folder(struct daemon *d, struct folder *f)
{
	return folder_intake_start(f, d->intake_pool, daemon_folder_intake_done, d);
}

/* At a reload: the folder is watched (its health looked at, STATUS= saying
 * so when its storage does not answer) but not started until its records are
 * in, read on a worker so that a share that hangs cannot freeze the loop. */
static int daemon_add_folder_later(struct daemon *d, const struct folder_config *cfg)
{
	struct folder **fs = reallocarray(d->folders, d->n_folders + 1, sizeof(*fs));
	struct folder *f;
	int r;

	if (!fs)
		log_oom();
	d->folders = fs;
	f = folder_new_empty(cfg, d->journal ? d->config->state_dir : NULL);
	d->folders[d->n_folders++] = f;
	r = daemon_intake_folder(d, f);
	if (r < 0)
		return r;
	return watch_add_folder(d->watch, f);
}

static void daemon_keep_record(struct journal_record *rec, void *userdata)
{
	struct daemon *d = userdata;
	struct journal_record *p = reallocarray(d->pending, d->n_pending + 1, sizeof(*p));

	if (!p)
		log_oom();
	d->pending = p;
	d->pending[d->n_pending++] = *rec;
	memset(rec, 0, sizeof(*rec)); /* ownership moved */
}

/* The state directory: the lock and the journal. Without one the daemon still
 * runs, but a crash would cost a second generation of results in flight. */
static int daemon_open_state(struct daemon *d)
{
	const char *dir = d->config->state_dir;
	char path[4096];
	size_t bad = 0;
	int r;

	r = journal_open(dir, &d->journal);
	if (r < 0) {
		log_warn("state_dir %s is not usable (%s): running without a journal", dir,
			 strerror(-r));
		return 0;
	}
	(void)snprintf(path, sizeof(path), "%s/lock", dir);
	d->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (d->lock_fd >= 0 && flock(d->lock_fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK) {
		log_error("another seedreamd is running with state_dir %s", dir);
		return -EBUSY;
	}
	r = journal_load(d->journal, daemon_keep_record, d, &bad);
	if (r < 0)
		log_warn("cannot read the journal in %s: %s", dir, strerror(-r));
	if (bad)
		log_warn("%zu unreadable journal record(s) in %s were kept for a human in "
			 "journal.bad (or, of the old layout, left in journal/)",
			 bad, dir);
	jobs_set_journal(d->jobs, d->journal);
	{
		bool created = false;

		/* Kept to this month: nothing older is ever counted. */
		r = ledger_open(dir, ledger_month_start(time(NULL)), &d->ledger, &created);
		if (r < 0)
			log_warn("cannot open the paid ledger in %s (%s): a restart counts what was "
				 "paid today from the records only",
				 dir, strerror(-r));
		else
			jobs_set_ledger(d->jobs, d->ledger, created);
	}
	return 0;
}

/* At a clean stop: the done records of each folder, so the next start needs
 * neither a sidecar read nor a hash for the folders that did not change. */
static void daemon_save_index_caches(struct daemon *d)
{
	char cache[PATH_MAX + 64];

	/* A save still running would finish after this one with an older copy. */
	work_pool_free(d->index_pool);
	d->index_pool = NULL;
	for (size_t i = 0; i < d->n_folders; i++) {
		struct folder *f = d->folders[i];
		int r;

		if (f->removed || f->index_stale || !f->state_dir)
			continue;
		folder_index_cache_file(f, cache, sizeof(cache));
		r = index_save_cache(f->index, f->cfg->output, f->cfg->done_dir, cache);
		if (r == -ENOMEM)
			log_oom();
		if (r < 0)
			log_warn("folder %s: cannot write the done-record cache %s: %s",
				 f->cfg->path, cache, strerror(-r));
	}
}

static bool config_in_use(const struct daemon *d, const struct config *c)
{
	for (size_t i = 0; i < d->n_folders; i++)
		for (size_t j = 0; j < c->n_folders; j++)
			if (d->folders[i]->cfg == &c->folders[j])
				return true;
	return false;
}

/* Frees removed folders nothing refers to any more, then the configurations
 * replaced by reloads that no folder points into. */
static void daemon_reap_folders(struct daemon *d)
{
	for (size_t i = 0; i < d->n_folders;) {
		struct folder *f = d->folders[i];
		if (f->removed && !jobs_folder_busy(d->jobs, f) && !f->index_reloading &&
		    !f->index_saving) {
			folder_free(f);
			d->folders[i] = d->folders[--d->n_folders];
		} else {
			i++;
		}
	}
	for (size_t i = 0; i < d->n_retired;) {
		if (config_in_use(d, d->retired[i])) {
			i++;
			continue;
		}
		config_free(d->retired[i]);
		d->retired[i] = d->retired[--d->n_retired];
	}
}

/* ---- reload ----------------------------------------------------------- */

static const struct folder_config *config_find_folder(const struct config *c, const char *path)
{
	for (size_t i = 0; i < c->n_folders; i++)
		if (strcmp(c->folders[i].path, path) == 0)
			return &c->folders[i];
	return NULL;
}

/* Events kept in state_dir by an earlier run (with the state_dir locked). */
static void daemon_restore_events(struct daemon *d)
{
	int r = events_restore(d->events, d->journal ? d->config->state_dir : NULL);

	if (r == -ENOMEM)
		log_oom();
	if (r < 0)
		log_warn("notify: cannot keep events in state_dir %s: %s", d->config->state_dir,
			 strerror(-r));
}

/* Notifications follow a reload (a notify: section added starts them). */
static void daemon_reload_events(struct daemon *d, const struct config *next, const char *key)
{
	int r;

	if (d->events) {
		events_set_config(d->events, next, key);
		return;
	}
	if (!next->notify.webhook && !next->notify.command)
		return;
	r = events_new(d->loop, d->http, next, key, &d->events);
	if (r == -ENOMEM)
		log_oom();
	if (r < 0) {
		log_warn("notify: cannot start notifications: %s", strerror(-r));
		return;
	}
	jobs_set_events(d->jobs, d->events);
	daemon_restore_events(d);
	/* The summary counts the day so far, as it would have from the start. */
	for (size_t i = 0; i < d->n_folders; i++)
		if (!d->folders[i]->removed)
			jobs_count_today_events(d->jobs, d->folders[i]);
}

struct daemon_reload_req {
	struct daemon *d;
	char *path;
	struct config *next;
	char err[1024];
	int r;
	char key[API_KEY_MAX]; /* when key_r is 0; wiped before q is freed */
	int key_r;
	unsigned key_loose_mode;
};

/* On a worker: config_load reads the file and probes the references, then
 * the key file is read (both may sit on a share that hangs). */
static void daemon_reload_work(void *arg)
{
	struct daemon_reload_req *q = arg;

	q->r = config_load(q->path, &q->next, q->err, sizeof(q->err));
	if (q->r == 0)
		q->key_r = find_api_key(q->next, q->key, sizeof(q->key), &q->key_loose_mode);
}

static void daemon_reload_apply(struct daemon *d, struct config *next, const char *key);
static void daemon_reload(struct daemon *d);

static void daemon_reload_done(void *arg, bool cancelled)
{
	struct daemon_reload_req *q = arg;
	struct daemon *d = q->d;

	d->reload_running = false;
	if (cancelled || d->stopping || d->reload_closing) {
		config_free(q->next);
	} else if (q->r < 0) {
		if (q->r == -ENOMEM)
			log_oom();
		log_error("reload failed, keeping the running configuration: %s", q->err);
		notify_ready();
		daemon_status(d);
	} else {
		log_api_key(q->next, q->key_r, q->key_loose_mode);
		daemon_reload_apply(d, q->next, q->key_r == 0 ? q->key : NULL);
	}
	explicit_bzero(q->key, sizeof(q->key));
	free(q->path);
	free(q);
	if (d->reload_again && !d->stopping && !d->reload_closing) {
		d->reload_again = false;
		daemon_reload(d);
	}
}

static void daemon_reload(struct daemon *d)
{
	struct daemon_reload_req *q;
	int r;

	if (d->reload_running) {
		d->reload_again = true; /* one more once this one is in */
		return;
	}
	notify_reloading();
	log_info("reloading %s", d->config_path);
	q = calloc(1, sizeof(*q));
	if (!q || !(q->path = strdup(d->config_path)))
		log_oom();
	q->d = d;
	r = work_submit(d->reload_pool, daemon_reload_work, daemon_reload_done, q);
	if (r == -ENOMEM)
		log_oom();
	if (r < 0) {
		free(q->path);
		free(q);
		notify_ready();
		return;
	}
	d->reload_running = true;
}

/* key: read with next on the reload's worker, NULL if there is none. */
static void daemon_reload_apply(struct daemon *d, struct config *next, const char *key)
{
	struct config **retired;
	size_t n_before;

	if (!key) {
		log_error("reload failed, keeping the running configuration: no usable API key");
		config_free(next);
		goto out;
	}
	jobs_set_api_key(d->jobs, key);
	daemon_reload_events(d, next, key);
	retired = reallocarray(d->retired, d->n_retired + 1, sizeof(*retired));
	if (!retired)
		log_oom();
	d->retired = retired;
	d->retired[d->n_retired++] = d->config;
	d->config = next;
	n_before = d->n_folders;
	for (size_t i = 0; i < n_before; i++) {
		struct folder *f = d->folders[i];
		const struct folder_config *fc;
		if (f->removed)
			continue;
		fc = config_find_folder(next, f->cfg->path);
		if (fc) {
			f->cfg = fc; /* changed settings apply to what is not yet submitted */
			/* A reload accepts the watched folder as it is now (say, a share
			 * the user has given up on); the output keeps its identity file. */
			folder_id_clear(&f->root_id);
			continue;
		}
		log_info("folder %s is no longer watched", f->cfg->path);
		watch_remove_folder(d->watch, f);
		jobs_drop_folder(d->jobs, f);
		f->removed = true;
	}
	jobs_set_config(d->jobs, next);
	for (size_t i = 0; i < next->n_folders; i++) {
		bool known = false;
		for (size_t j = 0; j < n_before; j++) {
			struct folder *f = d->folders[j];
			if (strcmp(f->cfg->path, next->folders[i].path) != 0)
				continue;
			known = true;
			if (f->removed) {
				/* Back before its last job finished: the same folder, so
				 * that job (maybe a paid result) is found, not redone. */
				log_info("folder %s is watched again", next->folders[i].path);
				f->removed = false;
				f->cfg = &next->folders[i];
				/* Dropped while its intake ran, which then restored
				 * nothing: its journal's paid results first. */
				if (!f->records_in && !f->index_reloading &&
				    daemon_intake_folder(d, f) < 0)
					log_oom();
				if (watch_add_folder(d->watch, f) < 0)
					log_oom();
			}
		}
		if (!known) {
			log_info("folder %s is now watched", next->folders[i].path);
			if (daemon_add_folder_later(d, &next->folders[i]) < 0)
				log_oom();
		}
	}
	daemon_reap_folders(d);
	(void)loop_timer_arm(d->rescan_timer, d->config->rescan_interval_ms);
out:
	notify_ready();
	daemon_status(d);
}

/* ---- signals ---------------------------------------------------------- */

static void daemon_begin_stop(struct daemon *d, const char *why)
{
	struct jobs_counts c;

	if (d->stopping)
		return;
	d->stopping = true;
	notify_stopping();
	jobs_stop(d->jobs);
	jobs_counts(d->jobs, &c);
	log_info("%s: stopping; waiting up to %llu s for %zu transfer(s) in flight", why,
		 (unsigned long long)d->config->stop_timeout_ms / 1000, c.in_flight);
	if (c.in_flight)
		notify_extend_timeout((d->config->stop_timeout_ms + 5000) * 1000);
	(void)loop_timer_arm(d->stop_timer, d->config->stop_timeout_ms);
	daemon_status(d);
}

static void daemon_signal(int fd, uint32_t events, void *userdata)
{
	struct daemon *d = userdata;
	struct signalfd_siginfo si;

	(void)events;
	while (read(fd, &si, sizeof(si)) == sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGHUP:
			if (!d->stopping && !d->once)
				daemon_reload(d);
			break;
		case SIGTERM:
			daemon_begin_stop(d, "SIGTERM");
			break;
		case SIGINT:
			daemon_begin_stop(d, "SIGINT");
			break;
		default:
			break;
		}
	}
}

static int daemon_setup_signals(struct daemon *d)
{
	sigset_t mask;

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	/* Blocked before curl_global_init, so any thread curl starts inherits it. */
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
		return -errno;
	(void)signal(SIGPIPE, SIG_IGN);
	d->signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (d->signal_fd < 0)
		return -errno;
	return 0;
}

/* ---- metrics and progress ---------------------------------------------- */

static int daemon_metrics_text(void *userdata, char **ret_text, size_t *ret_len)
{
	struct daemon *d = userdata;

	return metrics_jobs_render(d->metrics, d->jobs, d->folders, d->n_folders, d->stopping,
				   d->start_time_s, ret_text, ret_len);
}

static void daemon_progress_counts(void *userdata, struct progress_counts *ret)
{
	struct daemon *d = userdata;
	struct jobs_counts c;

	jobs_counts(d->jobs, &c);
	ret->done = c.done;
	ret->skipped = c.skipped;
	ret->failed = c.failed;
	ret->left = c.left_incomplete;
	ret->paid = c.generations;
	ret->in_flight = c.in_flight;
	ret->pending = c.jobs;
}

/* metrics_listen and metrics_textfile are read at start only: a reload
 * keeps the listener (and its port) as it is. */
static int daemon_start_metrics(struct daemon *d)
{
	const struct config *cfg = d->config;
	int r;

	d->start_time_s = (double)loop_wall_ms() / 1000.0;
	if (cfg->metrics_listen) {
		struct sockaddr_storage addr;
		socklen_t len;

		r = config_parse_listen(cfg->metrics_listen, &addr, &len);
		if (r >= 0)
			r = metrics_server_new(d->loop, (struct sockaddr *)&addr, len,
					       daemon_metrics_text, d, &d->metrics_server);
		if (r < 0) {
			log_error("metrics_listen %s: %s", cfg->metrics_listen, strerror(-r));
			return r;
		}
		log_info("serving metrics on http://%s/metrics", cfg->metrics_listen);
	}
	if (cfg->metrics_textfile) {
		r = metrics_textfile_new(d->loop, cfg->metrics_textfile, daemon_metrics_text, d,
					 &d->metrics_textfile);
		if (r < 0)
			return r;
	}
	if (d->once) {
		r = progress_new(d->loop, daemon_progress_counts, d, &d->progress);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- main ------------------------------------------------------------- */

/* After the state_dir lock: a socket file there is a killed run's, or a live
 * daemon's with another state_dir (control_new tells them apart). A socket
 * the configuration names must work; the default one is a convenience
 * (--once, run by hand, does not take it). */
static int daemon_open_control(struct daemon *d)
{
	const struct control_env env = {
	    .loop = d->loop,
	    .jobs = d->jobs,
	    .watch = d->watch,
	    .folders = &d->folders,
	    .n_folders = &d->n_folders,
	    .stopping = &d->stopping,
	    .config = &d->config,
	    /* --once neither applies nor changes the service's kept pauses: a
	     * batch run must end, and a pause made during it is for it only. */
	    .state_dir = d->journal && !d->once ? d->config->state_dir : NULL,
	    .changed = daemon_status,
	    .userdata = d,
	};
	bool configured = d->config->control_socket != NULL;
	char path[CONFIG_SOCKET_PATH_MAX + 16];
	int r = control_socket_path(d->config, path, sizeof(path));

	control_pauses_restore(&env);
	if (r == 0 && (!path[0] || (d->once && !configured)))
		return 0;
	if (r == 0)
		r = control_new(path, &env, &d->control);
	if (r == -ENOMEM)
		log_oom();
	if (r < 0) {
		const char *why = r == -EADDRINUSE ? "another seedreamd answers on it"
				  : r == -EEXIST   ? "it exists and is not a socket"
						   : strerror(-r);
		if (configured) {
			log_error("control_socket %s: %s", path, why);
			return r;
		}
		/* No runtime directory: a run by hand, outside the service. */
		log_msg(r == -ENOENT || r == -EACCES ? LOG_INFO : LOG_WARNING,
			"no control socket (seedreamctl will not reach this daemon): %s: %s",
			path[0] ? path : "the default path", why);
		return 0;
	}
	log_info("control socket: %s", path);
	return 0;
}

static int daemon_run(struct daemon *d, const char *api_key)
{
	const struct folder *first;
	struct jobs_counts c;
	int r;

	r = loop_new(&d->loop);
	if (r < 0)
		return r;
	r = loop_add(d->loop, d->signal_fd, EPOLLIN, daemon_signal, d, &d->signal_source);
	if (r >= 0)
		r = metrics_new(&d->metrics);
	if (r >= 0) {
		metrics_register(d->metrics); /* before any job: restored ones count too */
		r = http_new(d->loop, &d->http);
	}
	/* libvips starts before the first fit, on the loop thread
	 * (job_fit_can_start): the threads vips starts inherit the signal mask
	 * set before, so SIGTERM and SIGHUP still arrive through the signalfd. */
	if (r >= 0)
		r = jobs_new(d->loop, d->http, d->config, api_key, d->once, &d->jobs);
	if (r >= 0 && (d->config->notify.webhook || d->config->notify.command))
		r = events_new(d->loop, d->http, d->config, api_key, &d->events);
	if (r >= 0) {
		jobs_set_events(d->jobs, d->events);
		r = watch_new(d->loop, !d->once, &daemon_watch_events, d, &d->watch);
	}
	if (r >= 0)
		r = loop_timer_new(d->loop, daemon_status, d, &d->status_timer);
	if (r >= 0)
		r = loop_timer_new(d->loop, daemon_rescan, d, &d->rescan_timer);
	if (r >= 0)
		r = loop_timer_new(d->loop, daemon_watchdog, d, &d->watchdog_timer);
	if (r >= 0)
		r = loop_timer_new(d->loop, daemon_stop_timeout, d, &d->stop_timer);
	if (r >= 0 && !d->once)
		r = work_pool_new(d->loop, 1, &d->index_pool);
	if (r >= 0 && !d->once)
		r = work_pool_new(d->loop, 1, &d->reload_pool);
	if (r >= 0 && !d->once)
		r = work_pool_new_growing(d->loop, 1, 16, &d->intake_pool);
	if (r >= 0)
		r = daemon_start_metrics(d);
	if (r < 0)
		return r;
	jobs_on_change(d->jobs, daemon_status, d);
	r = daemon_open_state(d);
	if (r < 0)
		return r;
	daemon_restore_events(d);

	for (size_t i = 0; i < d->config->n_folders; i++) {
		r = daemon_add_folder(d, &d->config->folders[i]);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < d->n_pending; i++)
		if (d->pending[i].folder)
			log_warn("a paid-for result of %s/%s waits in the journal, but that folder "
				 "is not configured; it is kept",
				 d->pending[i].folder, d->pending[i].source);
	r = daemon_open_control(d);
	if (r < 0)
		return r;
	if (!d->once) {
		(void)loop_timer_arm(d->rescan_timer, d->config->rescan_interval_ms);
		d->watchdog_ms = notify_watchdog_ms();
		if (d->watchdog_ms)
			(void)loop_timer_arm(d->watchdog_timer, d->watchdog_ms / 2);
	}
	notify_ready();
	log_info("ready: watching %zu folder(s)%s", d->config->n_folders,
		 d->once ? " once" : "");
	daemon_status(d);

	while (!d->done) {
		r = loop_run_once(d->loop, -1);
		if (r < 0)
			return r;
		daemon_check_done(d);
		if (d->n_retired)
			daemon_reap_folders(d);
	}

	r = daemon_deliver_events(d);
	if (r < 0)
		return r;
	daemon_save_index_caches(d);
	progress_finish(d->progress);
	if (d->metrics_textfile) {
		r = metrics_textfile_final(d->metrics_textfile);
		if (r < 0)
			log_warn("cannot write the metrics textfile %s: %s",
				 d->config->metrics_textfile, strerror(-r));
	}
	jobs_counts(d->jobs, &c);
	if (c.limit_reason && c.queued)
		log_warn("%s", c.limit_reason);
	log_info("%s: %llu done, %llu failed, %llu already done, %zu left in the queue",
		 d->once ? "finished" : "stopped", (unsigned long long)c.done,
		 (unsigned long long)c.failed, (unsigned long long)c.skipped,
		 c.queued + c.settling + c.fitting + c.waiting + c.in_flight + c.twins);
	if (d->once && (c.failed || c.left_incomplete || c.paused || c.queued || c.in_flight ||
			c.waiting || c.twins || folders_missing(d, &first)))
		d->exit_code = 1;
	return 0;
}

static void daemon_cleanup(struct daemon *d)
{
	control_free(d->control); /* its requests' completions touch jobs and folders */
	work_pool_free(d->index_pool); /* its completions touch folders */
	d->reload_closing = true;      /* a reload that finished now is not applied */
	work_pool_free(d->reload_pool);
	work_pool_free(d->intake_pool);		/* its completions touch folders */
	metrics_server_free(d->metrics_server); /* renders from jobs and folders */
	metrics_textfile_free(d->metrics_textfile);
	progress_free(d->progress);
	jobs_free(d->jobs);
	events_free(d->events);
	if (work_threads_left_behind()) {
		/* A share that never answered holds a worker that may still
		 * touch the journal or libvips: leave without freeing them. The
		 * journal has every paid result already recorded. */
		log_warn("storage did not answer within the stop: exiting without waiting for it");
		_exit(d->exit_code);
	}
	fit_global_shutdown();
	journal_close(d->journal);
	ledger_close(d->ledger);
	if (d->lock_fd >= 0)
		close(d->lock_fd);
	for (size_t i = 0; i < d->n_pending; i++)
		journal_record_clear(&d->pending[i]);
	free(d->pending);
	for (size_t i = 0; i < d->n_folders; i++) {
		if (!d->folders[i]->removed)
			watch_remove_folder(d->watch, d->folders[i]);
		folder_free(d->folders[i]);
	}
	free(d->folders);
	watch_free(d->watch);
	if (d->loop) {
		loop_timer_free(d->loop, d->status_timer);
		loop_timer_free(d->loop, d->rescan_timer);
		loop_timer_free(d->loop, d->watchdog_timer);
		loop_timer_free(d->loop, d->stop_timer);
		loop_remove(d->loop, d->signal_source);
	}
	http_free(d->http);
	loop_free(d->loop);
	metrics_free(d->metrics);
	if (d->signal_fd >= 0)
		close(d->signal_fd);
	for (size_t i = 0; i < d->n_retired; i++)
		config_free(d->retired[i]);
	free(d->retired);
	config_free(d->config);
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{"config", required_argument, NULL, 'c'}, {"check", no_argument, NULL, 'C'},
		{"once", no_argument, NULL, 'o'},         {"verbose", no_argument, NULL, 'v'},
		{"quiet", no_argument, NULL, 'q'},        {"version", no_argument, NULL, 'V'},
		{"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
	};
	struct daemon d = {.config_path = CONFIG_DEFAULT_PATH, .signal_fd = -1, .lock_fd = -1};
	char err[1024], api_key[API_KEY_MAX];
	bool check = false;
	int verbosity = 0, opt, r;

	/* glibc gives each thread that allocates its own arena, and the worker
	 * pools grow to 64 threads: each arena kept the 1 MiB and 255 KiB
	 * buffers it once held (bench/: peak RSS 63 -> 50 MB with 16 uploads
	 * of 5.7 MB). Two arenas are plenty for the few threads that run.
	 * An operator who tuned malloc through the environment keeps that. */
	if (!getenv("MALLOC_ARENA_MAX") && !getenv("GLIBC_TUNABLES"))
		(void)mallopt(M_ARENA_MAX, 2);

	while ((opt = getopt_long(argc, argv, "c:vqh", options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			d.config_path = optarg;
			break;
		case 'C':
			check = true;
			break;
		case 'o':
			d.once = true;
			break;
		case 'v':
			verbosity = 1;
			break;
		case 'q':
			verbosity = -1;
			break;
		case 'V':
			(void)printf("seedreamd %s\n", SEEDREAMD_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	log_init(verbosity);

	r = config_load(d.config_path, &d.config, err, sizeof(err));
	if (r < 0) {
		log_error("%s", err);
		return 1;
	}
	if (check) {
		(void)printf("%s: configuration OK, %zu folder(s)\n", d.config_path,
			     d.config->n_folders);
		config_free(d.config);
		return 0;
	}
	if (load_api_key(d.config, api_key, sizeof(api_key)) < 0) {
		config_free(d.config);
		return 1;
	}
	r = daemon_setup_signals(&d);
	if (r < 0) {
		log_error("signals: %s", strerror(-r));
		config_free(d.config);
		return 1;
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		log_error("libcurl failed to initialise");
		config_free(d.config);
		return 1;
	}
	r = daemon_run(&d, api_key);
	explicit_bzero(api_key, sizeof(api_key));
	if (r < 0) {
		log_error("%s", strerror(-r));
		d.exit_code = 1;
	}
	daemon_cleanup(&d);
	curl_global_cleanup();
	return d.exit_code;
}
