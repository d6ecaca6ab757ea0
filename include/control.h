/* control: the control socket seedreamctl talks to. A unix stream socket on
 * the loop's epoll, non-blocking throughout; its protocol is control_proto.h.
 * Bounded: CONTROL_CLIENTS_MAX clients at once, one request each at a time
 * (the next line is read once the reply is written), a request line of
 * CONTROL_LINE_MAX, a reply of CONTROL_REPLY_MAX held for a client that does
 * not read, and CONTROL_IDLE_MS for a client to send its request or take its
 * reply. Only root, the daemon's user and members of its group are served
 * (SO_PEERCRED, SO_PEERGROUPS); the socket is mode 0660 in the daemon's group.
 * Nothing of the configuration is serialised: the API key never leaves. */
#ifndef SEEDREAMD_CONTROL_H
#define SEEDREAMD_CONTROL_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "folder.h"
#include "job.h"
#include "loop.h"
#include "watch.h"

#define CONTROL_CLIENTS_MAX 32
#define CONTROL_IDLE_MS	    10000
#define CONTROL_DEFAULT_DIR "/run/seedreamd"

/* What the control socket looks at and steers: the daemon's own, read when a
 * request comes (folders and n_folders point at the daemon's list, which a
 * reload changes). */
struct control_env {
	struct loop *loop;
	struct jobs *jobs;
	struct watch *watch;
	struct folder ***folders;
	size_t *n_folders;
	bool *stopping;
	struct config *const *config; /* the daemon's, changed by a reload */
	const char *state_dir;		 /* where pauses are kept across restarts; NULL: not kept */
	void (*changed)(void *userdata); /* a pause or resume: STATUS= again */
	void *userdata;
};

struct control;

/* The socket's path for config: control_socket, else $RUNTIME_DIRECTORY/control,
 * else CONTROL_DEFAULT_DIR/control; "" when off. -ENAMETOOLONG if it does not fit. */
int control_socket_path(const struct config *config, char *buf, size_t len);

/* Listens on path (a stale socket of a run that was killed is replaced; a
 * live daemon's socket or anything that is not a socket is refused: -EADDRINUSE,
 * -EEXIST). Blocking calls here are at start-up only. 0 or -errno; the caller logs. */
int control_new(const char *path, const struct control_env *env, struct control **ret_ctl);
/* Applies the pauses kept in env->state_dir by the run before (logged), with
 * the socket or without it (off, or failing to open): a restart never ends a
 * pause. Blocking: at start-up only. Nothing when env->state_dir is NULL. */
void control_pauses_restore(const struct control_env *env);
/* Closes every client, cancels their requests, removes the socket. Accepts NULL. */
void control_free(struct control *ctl);

/* The status reply's body: one function, so that what other modules count
 * (spend, metrics) joins it here. On the loop thread. NULL when out of memory. */
cJSON *control_status_json(const struct control_env *env);

#endif
