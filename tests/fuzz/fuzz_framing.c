/*
 * Fuzz target for lib/framing: however a stream is cut into reads, the
 * frames delivered must be exactly those a simple reference splitter finds,
 * in order, and the bytes held back must be the incomplete tail.  In hold
 * mode the callback also returns FRAMING_HOLD now and then, more chunks are
 * fed while it holds and framing_resume() delivers the rest: every frame
 * must still come out exactly once and in order, nothing may be delivered
 * while bytes are held except by framing_resume(), and the bytes held plus
 * those pending must be exactly the bytes fed and not delivered.
 *
 * Input layout:
 *   byte 0      bits 0-2: n, the number of chunk-size bytes after the header
 *               bit 3:    hold mode: a second header byte follows
 *               bits 4-6: s, stop after s frames by returning STOP_VALUE
 *                         (0: never)
 *               bit 7:    the callback overwrites each frame (as the daemon
 *                         rewrites message IDs in place)
 *   byte 1      in hold mode only:
 *               bits 0-3: k - 1; the callback returns FRAMING_HOLD on every
 *                         k-th frame, k = 1..16 (the s-th frame stops instead)
 *               bits 4-7: m, the number of chunks fed after a FRAMING_HOLD
 *                         before framing_resume() is called (0: at once)
 *   n bytes     chunk sizes, used in turn; 0 feeds an empty chunk
 *   the rest    the stream
 * (Bit 3 was the top bit of n before the hold mode; no committed seed had
 * n > 7, so they kept their meaning.)
 * Each chunk is fed from its own exact-size heap buffer so that ASan sees a
 * read past a chunk's end.  After the whole stream is fed, framing_resume()
 * is called until nothing is held.
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
	unsigned hold_every;	 /* 0: never return FRAMING_HOLD */
	size_t holds;		 /* FRAMING_HOLD returned by the callback so far */
	const struct framing *f; /* the framing being fed */
	bool resuming;		 /* inside framing_resume() */
	bool fed_while_held;	 /* inside framing_feed() entered with bytes held */
	bool held_this_call;	 /* the callback returned FRAMING_HOLD in this call */
};

static int frame_cb(void *arg, uint8_t *msg, size_t len)
{
	struct run *r = arg;

	/* No frame after a FRAMING_HOLD in the same call, and none at all from
	 * framing_feed() while bytes are held: only framing_resume() delivers
	 * them (and while it does, they still count as held). */
	CHECK(!r->held_this_call);
	CHECK(!r->fed_while_held);
	CHECK(r->resuming || framing_held(r->f) == 0);
	CHECK(r->delivered < r->n_ref);
	const struct ref_frame *want = &r->ref[r->delivered];
	CHECK(len == want->len);
	CHECK(len == 0 || memcmp(msg, r->stream + want->off, len) == 0);
	if (r->scribble && len)
		memset(msg, 0xa5, len);
	r->delivered++;
	if (r->stop_after && r->delivered == r->stop_after)
		return STOP_VALUE;
	if (r->hold_every && r->delivered % r->hold_every == 0) {
		r->held_this_call = true;
		r->holds++;
		return FRAMING_HOLD;
	}
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

/* Whatever of the first @fed stream bytes has not been delivered is held or
 * pending, no more and no less.  Bytes are held only from just after a
 * frame (the one whose callback returned FRAMING_HOLD), so no partial frame
 * is pending then.  Both buffers hold the stream bytes unchanged. */
static void check_accounts(const struct run *r, const struct framing *f, size_t fed)
{
	size_t end = r->delivered ? r->ref[r->delivered - 1].off + r->ref[r->delivered - 1].len : 0;
	size_t held = framing_held(f), pending = framing_pending(f);

	CHECK(end <= fed);
	CHECK(held + pending == fed - end);
	if (held) {
		CHECK(pending == 0);
		CHECK(memcmp(f->held, r->stream + end, held) == 0);
	}
	if (pending)
		CHECK(memcmp(f->buf, r->stream + end, pending) == 0);
}

/* Feed the @chunk stream bytes at @bytes; @fed stream bytes are in after it. */
static int feed_once(struct run *r, struct framing *f, const uint8_t *bytes, size_t chunk,
		     size_t fed)
{
	uint8_t *buf = malloc(chunk ? chunk : 1);
	CHECK(buf != NULL);
	memcpy(buf, bytes, chunk);
	size_t before = r->delivered, held = framing_held(f), holds = r->holds;
	r->fed_while_held = held != 0;
	r->held_this_call = false;
	int rc = framing_feed(f, buf, chunk, frame_cb, r);
	free(buf);
	r->fed_while_held = false;
	CHECK(r->delivered >= before);
	if (rc == STOP_VALUE) {
		/* The rest of the chunk is dropped: no accounting to check. */
		CHECK(r->stop_after && r->delivered == r->stop_after);
		CHECK(r->holds == holds);
		return rc;
	}
	if (held) {
		/* Appended to the held bytes, nothing delivered. */
		CHECK(rc == FRAMING_HOLD);
		CHECK(r->delivered == before);
		CHECK(framing_held(f) == held + chunk);
	} else if (rc == FRAMING_HOLD) {
		CHECK(r->holds == holds + 1); /* the callback asked, once */
	} else {
		CHECK(rc == 0);
		CHECK(r->holds == holds);
	}
	check_accounts(r, f, fed);
	return rc;
}

static int resume_once(struct run *r, struct framing *f, size_t fed)
{
	size_t holds = r->holds;

	r->resuming = true;
	r->held_this_call = false;
	int rc = framing_resume(f, frame_cb, r);
	r->resuming = false;
	if (rc == STOP_VALUE) {
		CHECK(r->stop_after && r->delivered == r->stop_after);
		CHECK(r->holds == holds);
		return rc;
	}
	if (rc == FRAMING_HOLD) {
		/* Only when the callback asked (so a frame came out: progress). */
		CHECK(r->holds == holds + 1);
	} else {
		CHECK(rc == 0);
		CHECK(r->holds == holds);
		CHECK(framing_held(f) == 0);
	}
	check_accounts(r, f, fed);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned n_sizes = data[0] & 0x07;
	bool hold_mode = data[0] & 0x08;
	unsigned stop_after = (data[0] >> 4) & 0x07;
	bool scribble = data[0] & 0x80;
	size_t header = hold_mode ? 2 : 1;
	if (size < header + n_sizes)
		return 0;
	unsigned hold_every = hold_mode ? (data[1] & 0x0f) + 1u : 0;
	unsigned feeds_while_held = hold_mode ? data[1] >> 4 : 0;
	const uint8_t *sizes = data + header;
	const uint8_t *stream = data + header + n_sizes;
	size_t len = size - header - n_sizes;

	/* At most one frame per two bytes. */
	struct ref_frame *ref = malloc((len / 2 + 1) * sizeof(*ref));
	CHECK(ref != NULL);
	size_t consumed;
	size_t n_ref = reference_split(stream, len, ref, &consumed);

	bool all_zero = true;
	for (unsigned i = 0; i < n_sizes; i++)
		if (sizes[i])
			all_zero = false;

	struct framing f;
	framing_init(&f);
	struct run r = {
		.stream = stream,
		.ref = ref,
		.n_ref = n_ref,
		.stop_after = stop_after,
		.scribble = scribble,
		.hold_every = hold_every,
		.f = &f,
	};
	size_t pos = 0;
	unsigned turn = 0;
	/* After a FRAMING_HOLD (from the callback, or from feeding while bytes
	 * are held) feed m more chunks, then resume; repeat while it holds. */
	bool paused = false;
	unsigned fed_paused = 0;
	int rc = 0;
	while (rc != STOP_VALUE && (pos < len || (n_sizes && turn == 0))) {
		if (paused && fed_paused >= feeds_while_held) {
			rc = resume_once(&r, &f, pos);
			paused = rc == FRAMING_HOLD;
			fed_paused = 0;
			continue;
		}
		size_t chunk = len - pos;
		if (n_sizes && !all_zero) {
			size_t want = sizes[turn % n_sizes];
			chunk = want < chunk ? want : chunk;
		}
		turn++;
		if (paused)
			fed_paused++;
		rc = feed_once(&r, &f, stream + pos, chunk, pos + chunk);
		pos += chunk;
		if (rc == FRAMING_HOLD)
			paused = true;
		if (rc != STOP_VALUE && (n_sizes == 0 || all_zero))
			CHECK(pos == len);
	}
	/* The whole stream is in: resume to completion. */
	while (rc != STOP_VALUE && (paused || framing_held(&f))) {
		rc = resume_once(&r, &f, pos);
		paused = rc == FRAMING_HOLD;
	}
	if (rc != STOP_VALUE) {
		/* Everything but the incomplete tail came out. */
		CHECK(r.delivered == n_ref);
		CHECK(framing_held(&f) == 0);
		CHECK(framing_pending(&f) == len - consumed);
		CHECK(resume_once(&r, &f, pos) == 0); /* nothing held: a no-op */
	}
	framing_deinit(&f);
	CHECK(framing_held(&f) == 0 && framing_pending(&f) == 0);
	free(ref);
	return 0;
}
