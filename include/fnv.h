/* fnv: FNV-1a, 64 bits: the one hash for tables, cache checksums and short
 * stable file names (not for anything an attacker should not collide). */
#ifndef SEEDREAMD_FNV_H
#define SEEDREAMD_FNV_H

#include <stddef.h>
#include <stdint.h>

#define FNV1A64_INIT 0xcbf29ce484222325ULL

/* Folds len bytes into h (start with FNV1A64_INIT, or that xor a seed). */
uint64_t fnv1a64_update(uint64_t h, const void *data, size_t len);
/* The hash of a NUL-terminated string. */
uint64_t fnv1a64_str(const char *s);

#endif
