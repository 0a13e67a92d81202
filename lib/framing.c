/*
 * Length framing.  The common case (small messages, each read holding whole
 * frames) never copies: frames are delivered straight from the chunk.
 */
#include "lib/framing.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum { PREFIX = 2 };

void framing_init(struct framing *f)
{
	memset(f, 0, sizeof(*f));
}

void framing_deinit(struct framing *f)
{
	free(f->buf);
	memset(f, 0, sizeof(*f));
}

static int reserve(struct framing *f, size_t need)
{
	if (need <= f->cap)
		return 0;
	size_t cap = need < 512 ? 512 : need;
	uint8_t *p = realloc(f->buf, cap);
	if (!p)
		return -ENOMEM;
	f->buf = p;
	f->cap = cap;
	return 0;
}

/* Fill the held partial frame from the chunk; deliver it once complete. */
static int continue_partial(struct framing *f, uint8_t **data, size_t *len, framing_frame_cb cb,
			    void *arg)
{
	size_t take;
	int rc;

	if (f->have < PREFIX) {
		take = PREFIX - f->have < *len ? PREFIX - f->have : *len;
		memcpy(f->buf + f->have, *data, take);
		f->have += take;
		*data += take;
		*len -= take;
		if (f->have < PREFIX)
			return 0;
	}
	size_t frame = PREFIX + (size_t)(f->buf[0] << 8 | f->buf[1]);
	rc = reserve(f, frame);
	if (rc)
		return rc;
	take = frame - f->have < *len ? frame - f->have : *len;
	memcpy(f->buf + f->have, *data, take);
	f->have += take;
	*data += take;
	*len -= take;
	if (f->have < frame)
		return 0;
	f->have = 0;
	return cb(arg, f->buf + PREFIX, frame - PREFIX);
}

int framing_feed(struct framing *f, uint8_t *data, size_t len, framing_frame_cb cb, void *arg)
{
	int rc;

	if (f->have) {
		rc = continue_partial(f, &data, &len, cb, arg);
		if (rc || len == 0)
			return rc;
	}
	while (len >= PREFIX) {
		size_t msg_len = (size_t)(data[0] << 8 | data[1]);
		if (len - PREFIX < msg_len)
			break;
		rc = cb(arg, data + PREFIX, msg_len);
		if (rc)
			return rc;
		data += PREFIX + msg_len;
		len -= PREFIX + msg_len;
	}
	if (len == 0)
		return 0;
	rc = reserve(f, PREFIX); /* the rest is the start of a frame: hold it */
	if (rc)
		return rc;
	f->have = 0;
	return continue_partial(f, &data, &len, cb, arg);
}
