/*
 * Fuzz target for lib/framing: however a stream is cut into reads, the
 * frames delivered must be exactly those a simple reference splitter finds,
 * in order, and the bytes held back must be the incomplete tail.
 *
 * Input layout:
 *   byte 0      bits 0-3: n, the number of chunk-size bytes that follow
 *               bits 4-6: s, stop after s frames by returning non-zero (0: never)
 *               bit 7:    the callback overwrites each frame (as the daemon
 *                         rewrites message IDs in place)
 *   n bytes     chunk sizes, used in turn; 0 feeds an empty chunk
 *   the rest    the stream
 * Each chunk is fed from its own exact-size heap buffer so that ASan sees a
 * read past a chunk's end.
 */
#include "tests/fuzz/fuzz.h"

#include "lib/framing.h"

#include <stdbool.h>
#include <string.h>

enum { STOP_VALUE = 77 };

struct ref_frame {
	size_t off; /* payload offset in the stream */
	size_t len;
};

struct run {
	const uint8_t *stream; /* pristine */
	const struct ref_frame *ref;
	size_t n_ref;
	size_t delivered;
	unsigned stop_after;
	bool scribble;
};

static int frame_cb(void *arg, uint8_t *msg, size_t len)
{
	struct run *r = arg;

	CHECK(r->delivered < r->n_ref);
	const struct ref_frame *want = &r->ref[r->delivered];
	CHECK(len == want->len);
	CHECK(len == 0 || memcmp(msg, r->stream + want->off, len) == 0);
	if (r->scribble && len)
		memset(msg, 0xa5, len);
	r->delivered++;
	if (r->stop_after && r->delivered == r->stop_after)
		return STOP_VALUE;
	return 0;
}

/* The reference: walk the stream prefix by prefix.  Returns the number of
 * frames; *consumed is where the incomplete tail starts. */
static size_t reference_split(const uint8_t *s, size_t len, struct ref_frame *out, size_t *consumed)
{
	size_t pos = 0, n = 0;

	while (len - pos >= 2) {
		size_t flen = (size_t)s[pos] << 8 | s[pos + 1];
		if (len - pos - 2 < flen)
			break;
		out[n].off = pos + 2;
		out[n].len = flen;
		n++;
		pos += 2 + flen;
	}
	*consumed = pos;
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned n_sizes = data[0] & 0x0f;
	unsigned stop_after = (data[0] >> 4) & 0x07;
	bool scribble = data[0] & 0x80;
	if (size < 1 + n_sizes)
		return 0;
	const uint8_t *sizes = data + 1;
	const uint8_t *stream = data + 1 + n_sizes;
	size_t len = size - 1 - n_sizes;

	/* At most one frame per two bytes. */
	struct ref_frame *ref = malloc((len / 2 + 1) * sizeof(*ref));
	CHECK(ref != NULL);
	size_t consumed;
	size_t n_ref = reference_split(stream, len, ref, &consumed);

	bool all_zero = true;
	for (unsigned i = 0; i < n_sizes; i++)
		if (sizes[i])
			all_zero = false;

	struct run r = {
		.stream = stream,
		.ref = ref,
		.n_ref = n_ref,
		.stop_after = stop_after,
		.scribble = scribble,
	};
	struct framing f;
	framing_init(&f);
	size_t pos = 0;
	unsigned turn = 0;
	bool stopped = false;
	while (pos < len || (n_sizes && turn == 0)) {
		size_t chunk = len - pos;
		if (n_sizes && !all_zero) {
			size_t want = sizes[turn % n_sizes];
			chunk = want < chunk ? want : chunk;
		}
		turn++;
		uint8_t *buf = malloc(chunk ? chunk : 1);
		CHECK(buf != NULL);
		memcpy(buf, stream + pos, chunk);
		size_t before = r.delivered;
		int rc = framing_feed(&f, buf, chunk, frame_cb, &r);
		free(buf);
		pos += chunk;
		if (rc == STOP_VALUE) {
			CHECK(stop_after && r.delivered == stop_after);
			stopped = true;
			break;
		}
		CHECK(rc == 0);
		CHECK(r.delivered >= before);
		/* Whatever has been fed and not delivered is held, no more. */
		size_t delivered_end =
		    r.delivered ? ref[r.delivered - 1].off + ref[r.delivered - 1].len : 0;
		CHECK(framing_pending(&f) == pos - delivered_end);
		if (n_sizes == 0 || all_zero)
			CHECK(pos == len);
	}
	if (!stopped) {
		CHECK(r.delivered == n_ref);
		CHECK(framing_pending(&f) == len - consumed);
	}
	framing_deinit(&f);
	CHECK(framing_pending(&f) == 0);
	free(ref);
	return 0;
}
