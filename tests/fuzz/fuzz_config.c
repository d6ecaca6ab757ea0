/* libFuzzer: config_parse() on arbitrary YAML. The input is passed as is,
 * without a terminating NUL, as config_load() may hand over any file. */
#include <stddef.h>
#include <stdint.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *config = NULL;
	char err[256];

	if (config_parse("fuzz.yaml", (const char *)data, size, &config, err, sizeof(err)) == 0)
		config_free(config);
	return 0;
}
