/* libFuzzer: the image header parser.
 *
 * Input layout: one mode byte, then the file's bytes. Mode < 0x80: the bytes
 * are the whole file. Otherwise the file is (mode & 0x7f) * 4099 + 1 bytes
 * longer than what is given, as when the head buffer stops short of a big
 * file (and as when a header declares more than was read). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct image_info info;
	enum image_probe_result r;
	const uint8_t *tail;
	uint64_t file_size;
	size_t tail_len;
	char msg[160];

	if (size < 1)
		return 0;
	file_size = size - 1;
	if (data[0] & 0x80)
		file_size += (uint64_t)(data[0] & 0x7f) * 4099 + 1;
	data++;
	size--;

	(void)image_sniff(data, size);
	r = image_probe(data, size, file_size, &info);
	/* HEIF, AVIF and JPEG XL keep their sides where only a decoder (the fit)
	 * finds them: for those an OK probe may leave them 0. */
	if (r == IMAGE_PROBE_OK &&
	    (info.format == IMAGE_FORMAT_UNKNOWN ||
	     (image_api_format(info.format) && (info.width == 0 || info.height == 0))))
		abort();
	if (r == IMAGE_PROBE_OK)
		(void)image_check_limits(&info, file_size, 10 * 1024 * 1024, msg, sizeof(msg));
	else if (!image_probe_code(r) || !image_probe_message(r))
		abort();

	tail_len = size < IMAGE_TAIL_MAX ? size : IMAGE_TAIL_MAX;
	tail = data + size - tail_len;
	for (int f = IMAGE_FORMAT_UNKNOWN; f <= IMAGE_FORMAT_GIF; f++)
		(void)image_tail_complete((enum image_format)f, tail, tail_len);
	return 0;
}
