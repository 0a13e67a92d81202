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
	free(f->held);
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

/* Deliver the frames in @data; on return *used says how much was consumed
 * (all of it unless the callback stopped). */
static int feed(struct framing *f, uint8_t *data, size_t len, framing_frame_cb cb, void *arg,
		size_t *used)
{
	uint8_t *start = data;
	int rc = 0;

	*used = len;
	if (f->have) {
		rc = continue_partial(f, &data, &len, cb, arg);
		if (rc || len == 0)
			goto out;
	}
	while (len >= PREFIX) {
		size_t msg_len = (size_t)(data[0] << 8 | data[1]);
		if (len - PREFIX < msg_len)
			break;
		data += PREFIX + msg_len;
		len -= PREFIX + msg_len;
		rc = cb(arg, data - msg_len, msg_len);
		if (rc)
			goto out;
	}
	if (len == 0)
		return 0;
	rc = reserve(f, PREFIX); /* the rest is the start of a frame: hold it */
	if (rc)
		return rc;
	f->have = 0;
	rc = continue_partial(f, &data, &len, cb, arg);
out:
	*used = (size_t)(data - start);
	return rc;
}

/* Keep @len bytes at @data for framing_resume(), after those already held. */
static int hold(struct framing *f, const uint8_t *data, size_t len)
{
	size_t need = f->held_len + len;

	if (need > f->held_cap) {
		uint8_t *p = realloc(f->held, need);
		if (!p)
			return -ENOMEM;
		f->held = p;
		f->held_cap = need;
	}
	memmove(f->held + f->held_len, data, len);
	f->held_len = need;
	return 0;
}

int framing_feed(struct framing *f, uint8_t *data, size_t len, framing_frame_cb cb, void *arg)
{
	size_t used;
	int rc;

	if (f->held_len) /* order: what came first is delivered first */
		return hold(f, data, len) ? -ENOMEM : FRAMING_HOLD;
	rc = feed(f, data, len, cb, arg, &used);
	if (rc == FRAMING_HOLD && used < len && hold(f, data + used, len - used) < 0)
		return -ENOMEM;
	return rc;
}

int framing_resume(struct framing *f, framing_frame_cb cb, void *arg)
{
	size_t used;
	int rc;

	if (f->held_len == 0)
		return 0;
	/* Frames are delivered in place from held; the callback must not feed
	 * this framing meanwhile (it is told to stop reading instead). */
	rc = feed(f, f->held, f->held_len, cb, arg, &used);
	memmove(f->held, f->held + used, f->held_len - used);
	f->held_len -= used;
	if (rc == 0 && f->held_len)
		rc = FRAMING_HOLD; /* cannot happen: feed() consumes all unless stopped */
	return rc;
}
