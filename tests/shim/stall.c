/* A stand-in for a share that stops answering (an NFS hard mount): loaded
 * with LD_PRELOAD, it holds every fsync and fdatasync of a file or directory
 * under $SEEDREAMD_STALL_PREFIX for as long as the file $SEEDREAMD_STALL_FLAG
 * exists. Tests only. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void stall_if_wanted(int fd)
{
	const char *prefix = getenv("SEEDREAMD_STALL_PREFIX");
	const char *flag = getenv("SEEDREAMD_STALL_FLAG");
	char link[64], path[PATH_MAX];
	ssize_t n;

	if (!prefix || !flag)
		return;
	(void)snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n < 0)
		return;
	path[n] = '\0';
	if (strncmp(path, prefix, strlen(prefix)) != 0)
		return;
	while (access(flag, F_OK) == 0) {
		struct timespec ts = {0, 50 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}

int fsync(int fd)
{
	int (*real)(int);

	/* POSIX's way to take a function from dlsym (ISO C has none). */
	*(void **)&real = dlsym(RTLD_NEXT, "fsync");

	stall_if_wanted(fd);
	return real(fd);
}

int fdatasync(int fd)
{
	int (*real)(int);

	/* POSIX's way to take a function from dlsym (ISO C has none). */
	*(void **)&real = dlsym(RTLD_NEXT, "fdatasync");

	stall_if_wanted(fd);
	return real(fd);
}
