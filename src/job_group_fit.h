/* job_group_fit: a group's images that the API would refuse or read
 * sideways (HEIC from a phone, an EXIF-rotated JPEG, a 48 MP photo) are
 * fitted as a single file is (fit.h, job_fit.c): the same rules and the
 * folder's fit options, on the fit workers, before the request is built.
 * The images of one group are fitted one after another, one fit worker
 * request at a time, so a group holds at most one decoded image in memory
 * (like a file; max_fits bounds the groups and files converted at once); the
 * fitted bytes wait in unlinked files in state_dir until the answer comes.
 * Images that need nothing are streamed from their files as before.
 * Private to the job module: included by job_private.h. */
#ifndef SEEDREAMD_JOB_GROUP_FIT_H
#define SEEDREAMD_JOB_GROUP_FIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "refs.h"
#include "sidecar.h"

struct folder;
struct job;
struct jobs;
struct job_group_fits;

/* On a worker: judges a group's image m (looked at by refs_look_fd) by the
 * rules a dropped file gets (job_check.c's job_judge): 0 with what it needs
 * in ret_reasons (0: sent as it is) and m->format set, or -EINVAL with a
 * sentence in why (a broken image, or one only a fit would mend in a folder
 * with fit: never). The size against max_input_bytes is the caller's
 * (without FIT_REASON_BYTES). */
int job_group_fit_judge(const struct refs_look *look, struct config_reference *m,
			enum fit_mode mode, uint64_t max_bytes, unsigned *ret_reasons, char *why,
			size_t whylen);

/* On the loop, once a group is checked: reasons[i] for each of its n
 * images (as job->members). Returns them or'ed together, for
 * job->fit_reasons (0: nothing to fit, nothing kept). */
unsigned job_group_fit_plan(struct job *job, const unsigned *reasons, size_t n);

/* job_fit_start for a group (JOB_FITTING): its images are fitted in turn;
 * then it is queued again, or fails naming the image that cannot be. */
void job_group_fit_start(struct jobs *jobs, struct job *job);

/* Whether every image of the group that needs it is fitted. */
bool job_group_fit_ready(const struct job *job);

/* On the loop, as the request is built: the fitted images' bytes take the
 * place of their files. fd/size/format are the first image's (sent as the
 * source); after/after_fds its other images' (n_after, in order). A file
 * replaced is kept open (the first image's, for the changed-check after
 * the answer: job_group_fit_first_src) or closed. 0, or -errno when nothing
 * was swapped (-EINVAL: its images are not all fitted yet). */
int job_group_fit_swap(struct jobs *jobs, struct job *job, int *fd, uint64_t *size,
		       const char **format, struct config_reference *after, int *after_fds,
		       size_t n_after);

/* The group's first image's own descriptor while its fitted bytes are
 * sent (what the answer's changed-check looks at), else -1. */
int job_group_fit_first_src(const struct job *job);

/* The sidecar's view of image i: the original's sha256 (as a fitted file's
 * source_sha256 is) and "fitted" when it was converted; src->fitted is set
 * (NULL) in every case. */
void job_group_fit_source(const struct job *job, size_t i, struct sidecar_source *src);

/* The answer came: closes the fitted bytes, keeping what the sidecar says. */
void job_group_fit_drop_bytes(struct job *job);

/* A file of a group folder's subfolder (rel) was removed: a group being
 * fitted is looked at again once the image under way is done, rather than
 * fitting the rest and sending without an image it fitted already. */
void job_group_fit_removed(struct jobs *jobs, struct folder *folder, const char *rel);

/* Forgets a fit under way (its result is dropped when it arrives) and
 * everything fitted; for a job that is freed or looked at anew. */
void job_group_fit_release(struct job *job);

#endif
