/*
 * Unit tests for lib/framing: a stream of length-prefixed frames must come
 * out as the same frames however the stream is cut into reads.  Each test
 * records what the callback saw and compares it with the frames that went in.
 */
#include "lib/framing.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

enum { MAX_FRAMES = 64 };

/* What the callback saw. */
struct seen {
	unsigned count;
	size_t len[MAX_FRAMES];
	uint8_t *data[MAX_FRAMES]; /* owned copies */
	unsigned stop_after;	   /* return stop_value once this many were seen; 0: never */
	int stop_value;
};

static int record_cb(void *arg, uint8_t *msg, size_t len)
{
	struct seen *s = arg;

	assert_true(s->count < MAX_FRAMES);
	s->len[s->count] = len;
	s->data[s->count] = malloc(len ? len : 1);
	assert_non_null(s->data[s->count]);
	if (len)
		memcpy(s->data[s->count], msg, len);
	/* The callback may modify the frame in place (the daemon rewrites IDs). */
	if (len)
		msg[0] ^= 0xff;
	s->count++;
	if (s->stop_after && s->count == s->stop_after)
		return s->stop_value;
	return 0;
}

static void seen_free(struct seen *s)
{
	for (unsigned i = 0; i < s->count; i++)
		free(s->data[i]);
	memset(s, 0, sizeof(*s));
}

/* A stream of frames with the given payload lengths; payload bytes follow a
 * pattern that differs per frame so that misplaced bytes are noticed. */
struct stream {
	uint8_t *bytes;
	size_t len;
	unsigned n;
	size_t frame_len[MAX_FRAMES];
	size_t frame_off[MAX_FRAMES]; /* payload offsets in bytes */
};

static void stream_make(struct stream *st, const size_t *lens, unsigned n)
{
	size_t total = 0;

	assert_true(n <= MAX_FRAMES);
	for (unsigned i = 0; i < n; i++)
		total += 2 + lens[i];
	st->bytes = malloc(total ? total : 1);
	assert_non_null(st->bytes);
	st->len = total;
	st->n = n;
	size_t o = 0;
	for (unsigned i = 0; i < n; i++) {
		assert_true(lens[i] <= 65535);
		st->bytes[o++] = (uint8_t)(lens[i] >> 8);
		st->bytes[o++] = (uint8_t)lens[i];
		st->frame_len[i] = lens[i];
		st->frame_off[i] = o;
		for (size_t j = 0; j < lens[i]; j++)
			st->bytes[o++] = (uint8_t)(i * 31 + j * 7 + 1);
	}
}

static void stream_free(struct stream *st)
{
	free(st->bytes);
	memset(st, 0, sizeof(*st));
}

/* Compare against a pristine copy: the callback flips bytes in the chunk. */
static void check_seen(const struct seen *s, const struct stream *pristine)
{
	assert_int_equal(s->count, pristine->n);
	for (unsigned i = 0; i < s->count; i++) {
		assert_int_equal(s->len[i], pristine->frame_len[i]);
		if (s->len[i])
			assert_memory_equal(s->data[i], pristine->bytes + pristine->frame_off[i],
					    s->len[i]);
	}
}

/* Feed @st cut at the given offsets (ascending, each within the stream). */
static void feed_cut(const struct stream *st, const size_t *cuts, unsigned ncuts, struct seen *s)
{
	struct framing f;
	uint8_t *copy = malloc(st->len ? st->len : 1);
	size_t from = 0;

	assert_non_null(copy);
	memcpy(copy, st->bytes, st->len);
	framing_init(&f);
	for (unsigned i = 0; i <= ncuts; i++) {
		size_t to = i < ncuts ? cuts[i] : st->len;
		assert_int_equal(framing_feed(&f, copy + from, to - from, record_cb, s), 0);
		from = to;
	}
	assert_int_equal(framing_pending(&f), 0);
	framing_deinit(&f);
	free(copy);
}

static void one_whole_frame(void **state)
{
	(void)state;
	static const size_t lens[] = { 29 };
	struct stream st;
	struct seen s = { 0 };

	stream_make(&st, lens, 1);
	feed_cut(&st, NULL, 0, &s);
	check_seen(&s, &st);
	seen_free(&s);
	stream_free(&st);
}

static void many_frames_one_chunk(void **state)
{
	(void)state;
	static const size_t lens[] = { 12, 1, 0, 300, 40, 512, 2, 3, 0, 0, 17 };
	struct stream st;
	struct seen s = { 0 };

	stream_make(&st, lens, sizeof(lens) / sizeof(lens[0]));
	feed_cut(&st, NULL, 0, &s);
	check_seen(&s, &st);
	seen_free(&s);
	stream_free(&st);
}

static void every_split_of_three(void **state)
{
	(void)state;
	static const size_t lens[] = { 5, 0, 600 }; /* the last beats the initial 512 buffer */
	struct stream st;

	stream_make(&st, lens, 3);
	for (size_t cut = 0; cut <= st.len; cut++) {
		struct seen s = { 0 };
		feed_cut(&st, &cut, 1, &s);
		check_seen(&s, &st);
		seen_free(&s);
	}
	stream_free(&st);
}

static void every_pair_of_splits(void **state)
{
	(void)state;
	static const size_t lens[] = { 3, 0, 4, 1 };
	struct stream st;

	/* Three chunks: catches state carried wrongly from one partial to the next. */
	stream_make(&st, lens, 4);
	for (size_t a = 0; a <= st.len; a++) {
		for (size_t b = a; b <= st.len; b++) {
			size_t cuts[2] = { a, b };
			struct seen s = { 0 };
			feed_cut(&st, cuts, 2, &s);
			check_seen(&s, &st);
			seen_free(&s);
		}
	}
	stream_free(&st);
}

static void byte_at_a_time(void **state)
{
	(void)state;
	static const size_t lens[] = { 7, 0, 1, 700, 2 };
	struct stream st;
	struct seen s = { 0 };
	struct framing f;

	stream_make(&st, lens, 5);
	framing_init(&f);
	for (size_t i = 0; i < st.len; i++) {
		uint8_t byte = st.bytes[i];
		assert_int_equal(framing_feed(&f, &byte, 1, record_cb, &s), 0);
	}
	check_seen(&s, &st);
	assert_int_equal(framing_pending(&f), 0);
	framing_deinit(&f);
	seen_free(&s);
	stream_free(&st);
}

static void zero_length(void **state)
{
	(void)state;
	struct framing f;
	struct seen s = { 0 };
	uint8_t data[] = { 0, 0, 0, 0 };

	framing_init(&f);
	assert_int_equal(framing_feed(&f, data, sizeof(data), record_cb, &s), 0);
	assert_int_equal(s.count, 2);
	assert_int_equal(s.len[0], 0);
	assert_int_equal(s.len[1], 0);
	/* An empty feed is harmless, in any state. */
	assert_int_equal(framing_feed(&f, data, 0, record_cb, &s), 0);
	assert_int_equal(framing_feed(&f, data, 1, record_cb, &s), 0);
	assert_int_equal(framing_pending(&f), 1);
	assert_int_equal(framing_feed(&f, data, 0, record_cb, &s), 0);
	assert_int_equal(framing_pending(&f), 1);
	assert_int_equal(framing_feed(&f, data + 1, 1, record_cb, &s), 0);
	assert_int_equal(s.count, 3);
	assert_int_equal(framing_pending(&f), 0);
	framing_deinit(&f);
	seen_free(&s);
}

static void largest_frame(void **state)
{
	(void)state;
	static const size_t lens[] = { 65535, 3, 65535 };
	struct stream st;

	stream_make(&st, lens, 3);
	/* Whole, and cut in awkward places (inside prefixes and payloads). */
	struct seen s = { 0 };
	feed_cut(&st, NULL, 0, &s);
	check_seen(&s, &st);
	seen_free(&s);

	static const size_t cuts[] = { 1, 2, 1000, 65536, 65537, 65538, 65540, 65542, 131000 };
	feed_cut(&st, cuts, sizeof(cuts) / sizeof(cuts[0]), &s);
	check_seen(&s, &st);
	seen_free(&s);
	stream_free(&st);
}

static void pending_counts(void **state)
{
	(void)state;
	static const size_t lens[] = { 10, 20 };
	struct stream st;
	struct seen s = { 0 };
	struct framing f;

	stream_make(&st, lens, 2);
	uint8_t copy[64];
	assert_true(st.len <= sizeof(copy));
	memcpy(copy, st.bytes, st.len);
	framing_init(&f);
	assert_int_equal(framing_pending(&f), 0);
	assert_int_equal(framing_feed(&f, copy, 1, record_cb, &s), 0);
	assert_int_equal(framing_pending(&f), 1);
	assert_int_equal(framing_feed(&f, copy + 1, 5, record_cb, &s), 0);
	assert_int_equal(framing_pending(&f), 6);
	assert_int_equal(s.count, 0);
	/* Finish frame 1 and start frame 2 in the same chunk. */
	assert_int_equal(framing_feed(&f, copy + 6, 10, record_cb, &s), 0);
	assert_int_equal(s.count, 1);
	assert_int_equal(framing_pending(&f), 4);
	assert_int_equal(framing_feed(&f, copy + 16, st.len - 16, record_cb, &s), 0);
	assert_int_equal(framing_pending(&f), 0);
	check_seen(&s, &st);
	framing_deinit(&f);
	seen_free(&s);
	stream_free(&st);
}

static void callback_stops(void **state)
{
	(void)state;
	static const size_t lens[] = { 4, 5, 6, 7 };
	struct stream st;

	stream_make(&st, lens, 4);

	/* Stopping on a frame delivered in place from the chunk. */
	struct seen s = { .stop_after = 2, .stop_value = 42 };
	struct framing f;
	framing_init(&f);
	assert_int_equal(framing_feed(&f, st.bytes, st.len, record_cb, &s), 42);
	assert_int_equal(s.count, 2);
	framing_deinit(&f);
	seen_free(&s);

	/* Stopping on a frame completed from the held partial: the rest of the
	 * chunk (two whole frames) is not delivered. */
	stream_free(&st);
	stream_make(&st, lens, 4);
	s = (struct seen){ .stop_after = 1, .stop_value = -7 };
	framing_init(&f);
	assert_int_equal(framing_feed(&f, st.bytes, 3, record_cb, &s), 0);
	assert_int_equal(s.count, 0);
	assert_int_equal(framing_feed(&f, st.bytes + 3, st.len - 3, record_cb, &s), -7);
	assert_int_equal(s.count, 1);
	assert_int_equal(s.len[0], 4);
	framing_deinit(&f);
	seen_free(&s);
	stream_free(&st);
}

static void deinit_holding_partial(void **state)
{
	(void)state;
	struct framing f;
	struct seen s = { 0 };
	uint8_t data[] = { 0x10, 0x00, 1, 2, 3 };

	/* A connection closed mid-frame: deinit frees the held bytes (valgrind),
	 * and the struct can be reused after init. */
	framing_init(&f);
	assert_int_equal(framing_feed(&f, data, sizeof(data), record_cb, &s), 0);
	assert_int_equal(framing_pending(&f), sizeof(data));
	framing_deinit(&f);
	assert_int_equal(framing_pending(&f), 0);
	framing_deinit(&f); /* twice is harmless */
	framing_init(&f);
	uint8_t zero[] = { 0, 0 };
	assert_int_equal(framing_feed(&f, zero, 2, record_cb, &s), 0);
	assert_int_equal(s.count, 1);
	framing_deinit(&f);
	seen_free(&s);
}

/* Where each frame's bytes were when the callback saw them. */
struct where {
	unsigned count;
	const uint8_t *msg[8];
	size_t len[8];
};

static int where_cb(void *arg, uint8_t *msg, size_t len)
{
	struct where *w = arg;

	assert_true(w->count < 8);
	w->msg[w->count] = msg;
	w->len[w->count] = len;
	w->count++;
	return 0;
}

static void whole_frames_in_place(void **state)
{
	(void)state;
	struct framing f;
	struct where w = { 0 };
	/* 3-byte frame, 0-byte frame ending exactly at the chunk's end. */
	uint8_t chunk[] = { 0, 3, 'a', 'b', 'c', 0, 0 };

	/* The header promises no copy for frames whole in the chunk. */
	framing_init(&f);
	assert_int_equal(framing_feed(&f, chunk, sizeof(chunk), where_cb, &w), 0);
	assert_int_equal(w.count, 2);
	assert_ptr_equal(w.msg[0], chunk + 2);
	assert_int_equal(w.len[0], 3);
	assert_ptr_equal(w.msg[1], chunk + 7);
	assert_int_equal(w.len[1], 0);

	/* A frame that fills the rest of the chunk exactly, after a partial. */
	uint8_t first[] = { 0, 2, 'x' };
	uint8_t second[] = { 'y', 0, 1, 'z' };
	w.count = 0;
	assert_int_equal(framing_feed(&f, first, sizeof(first), where_cb, &w), 0);
	assert_int_equal(framing_feed(&f, second, sizeof(second), where_cb, &w), 0);
	assert_int_equal(w.count, 2);
	assert_ptr_equal(w.msg[1], second + 3);
	assert_memory_equal(w.msg[0], "xy", 2);
	framing_deinit(&f);
}


/* A reader at its cap: every third frame the callback says FRAMING_HOLD.
 * Whatever the cuts, and whatever arrives while bytes are held, every frame
 * comes out once, in order, through framing_resume(). */
static int hold_cb(void *arg, uint8_t *msg, size_t len)
{
	struct seen *s = arg;

	record_cb(arg, msg, len);
	return s->count % 3 == 0 ? FRAMING_HOLD : 0;
}

static void hold_and_resume(void **state)
{
	(void)state;
	static const size_t lens[] = { 12, 0, 300, 1, 40, 40, 40, 7, 600, 2, 33, 12, 5 };
	static const size_t cuts[][3] = { { 1, 2, 3 }, { 14, 200, 500 }, { 60, 61, 1000 } };
	enum { N = sizeof(lens) / sizeof(lens[0]) };

	for (unsigned c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
		struct stream st;
		struct seen s = { 0 };
		struct framing f;
		size_t from = 0;

		stream_make(&st, lens, N);
		uint8_t *copy = malloc(st.len);
		assert_non_null(copy);
		memcpy(copy, st.bytes, st.len);
		framing_init(&f);
		for (unsigned i = 0; i <= 3; i++) {
			size_t to = i < 3 ? cuts[c][i] : st.len;
			unsigned before = s.count;
			int rc = framing_feed(&f, copy + from, to - from, hold_cb, &s);
			assert_true(rc == 0 || rc == FRAMING_HOLD);
			if (rc == FRAMING_HOLD)
				/* Held: nothing after the holding frame was delivered. */
				assert_true(s.count == before || s.count % 3 == 0);
			from = to;
		}
		/* Held bytes come out only through resume, three frames at a time. */
		for (int rounds = 0; framing_held(&f) && rounds < N; rounds++) {
			unsigned before = s.count;
			int rc = framing_resume(&f, hold_cb, &s);
			assert_true(rc == 0 || rc == FRAMING_HOLD);
			assert_true(s.count - before <= 3);
		}
		assert_int_equal(framing_held(&f), 0);
		assert_int_equal(framing_resume(&f, hold_cb, &s), 0);
		check_seen(&s, &st);
		framing_deinit(&f);
		free(copy);
		seen_free(&s);
		stream_free(&st);
	}
}

/* Bytes fed while others are held queue behind them, even whole frames. */
static void feed_while_held_keeps_order(void **state)
{
	(void)state;
	static const size_t lens[] = { 3, 3, 3, 3, 3, 3, 3 };
	struct stream st;
	struct seen s = { 0 };
	struct framing f;

	stream_make(&st, lens, 7);
	uint8_t *copy = malloc(st.len); /* the callback flips bytes of what it is given */
	assert_non_null(copy);
	memcpy(copy, st.bytes, st.len);
	framing_init(&f);
	assert_int_equal(framing_feed(&f, copy, 20, hold_cb, &s), FRAMING_HOLD);
	assert_int_equal(s.count, 3);
	assert_int_equal(framing_held(&f), 5);
	assert_int_equal(framing_feed(&f, copy + 20, st.len - 20, hold_cb, &s), FRAMING_HOLD);
	assert_int_equal(s.count, 3);
	assert_int_equal(framing_resume(&f, hold_cb, &s), FRAMING_HOLD);
	assert_int_equal(s.count, 6);
	assert_int_equal(framing_resume(&f, hold_cb, &s), 0);
	check_seen(&s, &st);
	framing_deinit(&f);
	free(copy);
	seen_free(&s);
	stream_free(&st);
}
int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(one_whole_frame),	 cmocka_unit_test(many_frames_one_chunk),
		cmocka_unit_test(every_split_of_three),	 cmocka_unit_test(every_pair_of_splits),
		cmocka_unit_test(byte_at_a_time),	 cmocka_unit_test(zero_length),
		cmocka_unit_test(largest_frame),	 cmocka_unit_test(pending_counts),
		cmocka_unit_test(callback_stops),	 cmocka_unit_test(deinit_holding_partial),
		cmocka_unit_test(whole_frames_in_place),
		cmocka_unit_test(hold_and_resume),
		cmocka_unit_test(feed_while_held_keeps_order),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
