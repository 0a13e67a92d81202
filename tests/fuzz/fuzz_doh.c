/*
 * Fuzz target for the HTTP/2 -> DNS response path of lib/doh: whatever a
 * server sends, a DoH client session must stay within its bounds and hand
 * out only what it promised.  The input plays the server: a client session
 * submits a few queries (streams 1, 3, 5, 7), sends a PING, and is fed the
 * input as the server's bytes, cut into chunks; between chunks its output
 * is taken (and dropped) and its events drained.  Checked, for every event:
 *   - a stream event is for a stream we submitted and did not cancel, once;
 *   - an answer has status 200 and a body of 1..65,535 bytes, and if
 *     doh_check_answer() accepts it (the DNS half: parse, QR, ID 0, Age off
 *     the TTLs), the rewritten body still parses with the same question;
 *   - after a GOAWAY nothing new may open; PING acks never outnumber PINGs;
 *   - the room never exceeds the cap, the open streams never exceed those
 *     submitted.
 * Some events cancel their stream (as the upstream layer does on an answer)
 * and some cancel another one still open, so resets and late cancels run.
 *
 * Input layout:
 *   byte 0   bit 0: GET (else POST); bits 1-2: queries submitted - 1;
 *            bit 3: cancel another open stream after each stream event;
 *            bit 4: submit one more query after each chunk, when there is room
 *   byte 1   chunk size (0: everything at once)
 *   the rest the server's bytes: its SETTINGS first, as HTTP/2 requires
 */
#include "tests/fuzz/fuzz.h"

#include "lib/doh.h"
#include "lib/wire.h"

#include <stdbool.h>

enum { MAX_QUERIES = 64 };

struct query {
	int32_t id;
	bool ended;	/* its event came */
	bool cancelled; /* we cancelled it */
};

struct run {
	struct doh_session *s;
	struct query q[MAX_QUERIES];
	unsigned n;
	unsigned pings, acks;
	bool goaway;
	bool cancel_others;
};

static const uint8_t base_query[] = {
	0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* header */
	0x03, 'w',  'w',  'w',	0x07, 'e',  'x',  'a',	'm',  'p',  'l',  'e',
	0x00, 0x00, 0x01, 0x00, 0x01, /* www.example. A IN */
};

static void submit(struct run *r)
{
	if (r->n == MAX_QUERIES)
		return;
	int32_t id = doh_submit(r->s, base_query, sizeof(base_query), &r->q[r->n]);
	if (r->goaway) {
		CHECK(id == DOH_ECLOSING);
		return;
	}
	if (id < 0) {
		CHECK(id == DOH_EFULL || id == DOH_ECLOSING);
		return;
	}
	CHECK(id % 2 == 1);
	for (unsigned i = 0; i < r->n; i++)
		CHECK(r->q[i].id != id);
	r->q[r->n++] = (struct query){ .id = id };
}

static void drain_output(struct run *r)
{
	const uint8_t *p;
	size_t n, total = 0;

	while ((n = doh_output(r->s, &p)) > 0) {
		CHECK(p != NULL);
		total += n;
		CHECK(total < (64u << 20)); /* it must run dry */
	}
}

static void stream_event(struct run *r, const struct doh_event *ev)
{
	struct query *q = ev->user;
	struct wire_info info, again;

	CHECK(q >= r->q && q < r->q + r->n);
	CHECK(q->id == ev->stream_id);
	CHECK(!q->ended && !q->cancelled);
	q->ended = true;
	if (ev->result == DOH_ANSWER) {
		CHECK(ev->status == 200);
		CHECK(ev->body_len <= DOH_MAX_BODY);
		CHECK(ev->body_len == 0 || ev->body != NULL);
		if (ev->body_len && doh_check_answer(ev->body, ev->body_len, ev->age, &info) == 0) {
			CHECK(info.id == 0 && (info.flags & WIRE_FLAG_QR));
			CHECK(wire_parse(ev->body, ev->body_len, &again) == 0);
			CHECK(wire_question_equal(&info.q, &again.q));
		}
	} else {
		CHECK(ev->body == NULL);
		if (ev->result == DOH_HTTP_STATUS)
			CHECK(ev->status != 200);
	}
	/* As the upstream layer does after taking an answer. */
	if (ev->stream_id % 4 == 1)
		doh_cancel(r->s, ev->stream_id);
	if (r->cancel_others) {
		for (unsigned i = 0; i < r->n; i++) {
			if (!r->q[i].ended && !r->q[i].cancelled) {
				r->q[i].cancelled = true;
				doh_cancel(r->s, r->q[i].id);
				break;
			}
		}
	}
}

static void drain_events(struct run *r)
{
	struct doh_event ev;

	while (doh_next_event(r->s, &ev)) {
		switch (ev.type) {
		case DOH_EV_STREAM:
			stream_event(r, &ev);
			break;
		case DOH_EV_GOAWAY:
			r->goaway = true;
			break;
		case DOH_EV_PING_ACK:
			CHECK(++r->acks <= r->pings);
			break;
		}
		if (r->goaway) {
			CHECK(doh_closing(r->s));
			CHECK(doh_room(r->s) == 0);
		}
	}
	CHECK(doh_room(r->s) <= DOH_MAX_STREAMS);
	CHECK(doh_streams(r->s) <= r->n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	struct run r = { .cancel_others = data[0] & 0x08 };
	bool more = data[0] & 0x10;
	size_t chunk = data[1] ? data[1] : size;
	unsigned n = ((data[0] >> 1) & 3) + 1;

	r.s = doh_session_new("dns.test", "/dns-query", data[0] & 1 ? DOH_GET : DOH_POST);
	CHECK(r.s != NULL);
	for (unsigned i = 0; i < n; i++)
		submit(&r);
	CHECK(r.n == n);
	if (doh_ping(r.s) == 0)
		r.pings++;
	drain_output(&r);
	for (size_t off = 2; off < size; off += chunk) {
		size_t len = size - off < chunk ? size - off : chunk;
		int rc = doh_feed(r.s, data + off, len);
		CHECK(rc == 0 || rc == DOH_EPROTO);
		drain_events(&r);
		drain_output(&r);
		drain_events(&r);
		if (rc == DOH_EPROTO) {
			CHECK(doh_closing(r.s));
			CHECK(doh_feed(r.s, data + off, len) == DOH_EPROTO);
			break;
		}
		if (more && doh_room(r.s) > 0)
			submit(&r);
	}
	drain_output(&r);
	drain_events(&r);
	doh_session_free(r.s);
	return 0;
}
