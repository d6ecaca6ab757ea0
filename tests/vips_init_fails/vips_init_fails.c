/* vips_init_fails.so: an LD_PRELOAD shim for test_fit_unavailable.py. vips_init
 * starts libvips (so that its error buffer works) and then reports a failure
 * with a known reason, as a libvips that cannot start would. It says on stderr
 * whether it runs on the main thread (the daemon's loop thread): vips_init
 * must not run while other threads may read the environment. */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>
#include <vips/vips.h>

int vips_init(const char *argv0)
{
	int (*real_init)(const char *);
	void *sym = dlsym(RTLD_NEXT, "vips_init");

	/* POSIX's way to turn dlsym's answer into a function pointer. */
	memcpy(&real_init, &sym, sizeof(real_init));

	fprintf(stderr, "vips_init_fails: vips_init on the %s thread\n",
		gettid() == getpid() ? "main" : "another");
	if (!real_init || real_init(argv0))
		return -1;
	vips_error("vips_init_fails", "%s", "made to fail by the test shim");
	return -1;
}
