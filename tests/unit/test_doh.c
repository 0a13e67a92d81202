/*
 * Unit tests for lib/doh: a doh_session talks to an nghttp2 *server*
 * session that lives in the test, both on memory buffers, the bytes carried
 * between them by pump().  The server records every request (method, path,
 * headers, body) and every RST_STREAM and GOAWAY it receives; each test
 * plays it by hand: answer, refuse, reset, GOAWAY, change SETTINGS.
 */
#include "lib/doh.h"

#include "lib/wire.h"
#include "tests/unit/msg_builder.h"

#include <limits.h>
#include <nghttp2/nghttp2.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

enum {
	MAX_REQS = 300,
	PUMP_ROUNDS = 100,
	TYPE_A = 1,
};

/* -- the server --------------------------------------------------------------------- */

struct req {
	int32_t id;
	char method[8];
	char path[DOH_MAX_GET_PATH + 8];
	char authority[128];
	char content_type[64];
	char accept[64];
	char content_length[16];
	bool user_agent;
	unsigned headers;
	uint8_t body[65536];
	size_t body_len;
	bool ended; /* END_STREAM received */
	bool reset; /* RST_STREAM received */
	uint32_t reset_code;
};

struct server {
	nghttp2_session *h2;
	struct req reqs[MAX_REQS];
	unsigned n_reqs;
	unsigned goaways; /* GOAWAY frames received */
	uint32_t goaway_code;
	unsigned rsts;	 /* RST_STREAM frames received */
	char order[256]; /* HEADERS and DATA received: "H1D1H3D3" */
	/* the response being sent by respond() */
	const uint8_t *out_body;
	size_t out_len, out_off;
};

static struct server srv;

static struct req *req_of(int32_t id)
{
	for (unsigned i = 0; i < srv.n_reqs; i++)
		if (srv.reqs[i].id == id)
			return &srv.reqs[i];
	return NULL;
}

static void copy_value(char *dst, size_t cap, const uint8_t *v, size_t len)
{
	assert_true(len < cap);
	memcpy(dst, v, len);
	dst[len] = '\0';
}

static int srv_begin_headers(nghttp2_session *h2, const nghttp2_frame *frame, void *arg)
{
	(void)h2;
	(void)arg;
	if (frame->hd.type == NGHTTP2_HEADERS && !req_of(frame->hd.stream_id)) {
		assert_true(srv.n_reqs < MAX_REQS);
		struct req *r = &srv.reqs[srv.n_reqs++];
		memset(r, 0, sizeof(*r));
		r->id = frame->hd.stream_id;
	}
	return 0;
}

static int srv_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
		      size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
		      void *arg)
{
	struct req *r = req_of(frame->hd.stream_id);
	char n[64];

	(void)h2;
	(void)flags;
	(void)arg;
	assert_non_null(r);
	copy_value(n, sizeof(n), name, namelen);
	r->headers++;
	if (strcmp(n, ":method") == 0)
		copy_value(r->method, sizeof(r->method), value, valuelen);
	else if (strcmp(n, ":path") == 0)
		copy_value(r->path, sizeof(r->path), value, valuelen);
	else if (strcmp(n, ":authority") == 0)
		copy_value(r->authority, sizeof(r->authority), value, valuelen);
	else if (strcmp(n, "content-type") == 0)
		copy_value(r->content_type, sizeof(r->content_type), value, valuelen);
	else if (strcmp(n, "accept") == 0)
		copy_value(r->accept, sizeof(r->accept), value, valuelen);
	else if (strcmp(n, "content-length") == 0)
		copy_value(r->content_length, sizeof(r->content_length), value, valuelen);
	else if (strcmp(n, "user-agent") == 0)
		r->user_agent = true;
	return 0;
}

static int srv_data(nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
		    void *arg)
{
	struct req *r = req_of(id);

	(void)h2;
	(void)flags;
	(void)arg;
	assert_non_null(r);
	assert_true(r->body_len + len <= sizeof(r->body));
	memcpy(r->body + r->body_len, data, len);
	r->body_len += len;
	return 0;
}

static int srv_frame(nghttp2_session *h2, const nghttp2_frame *frame, void *arg)
{
	struct req *r = req_of(frame->hd.stream_id);

	(void)h2;
	(void)arg;
	if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) && r &&
	    (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
		r->ended = true;
	if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
	    strlen(srv.order) < sizeof(srv.order) - 16) {
		size_t o = strlen(srv.order);
		snprintf(srv.order + o, sizeof(srv.order) - o, "%c%d",
			 frame->hd.type == NGHTTP2_HEADERS ? 'H' : 'D', frame->hd.stream_id);
	}
	if (frame->hd.type == NGHTTP2_RST_STREAM) {
		srv.rsts++;
		if (r) {
			r->reset = true;
			r->reset_code = frame->rst_stream.error_code;
		}
	}
	if (frame->hd.type == NGHTTP2_GOAWAY) {
		srv.goaways++;
		srv.goaway_code = frame->goaway.error_code;
	}
	return 0;
}

/* A server that pretends not to know one stream any more would answer it
 * with RST_STREAM STREAM_CLOSED; nghttp2 does that on its own. */
static void server_init(unsigned max_streams)
{
	nghttp2_session_callbacks *cbs;
	nghttp2_settings_entry settings[] = {
		{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, max_streams },
	};

	memset(&srv, 0, sizeof(srv));
	assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, srv_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, srv_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, srv_data);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, srv_frame);
	assert_int_equal(nghttp2_session_server_new(&srv.h2, cbs, NULL), 0);
	nghttp2_session_callbacks_del(cbs);
	assert_int_equal(
	    nghttp2_submit_settings(srv.h2, NGHTTP2_FLAG_NONE, settings, max_streams ? 1 : 0), 0);
}

static void server_deinit(void)
{
	nghttp2_session_del(srv.h2);
	srv.h2 = NULL;
}

/* Client output to the server: bytes moved. */
static size_t client_to_server(struct doh_session *s)
{
	const uint8_t *p;
	size_t n, total = 0;

	while ((n = doh_output(s, &p)) > 0) {
		assert_int_equal(nghttp2_session_mem_recv(srv.h2, p, n), (ssize_t)n);
		total += n;
	}
	return total;
}

static size_t server_to_client(struct doh_session *s, int *rc)
{
	const uint8_t *p;
	ssize_t n;
	size_t total = 0;

	while ((n = nghttp2_session_mem_send(srv.h2, &p)) > 0) {
		int r = doh_feed(s, p, (size_t)n);
		if (r)
			*rc = r;
		total += (size_t)n;
	}
	assert_true(n == 0);
	return total;
}

/* Move bytes both ways until neither side has anything to say.  Returns
 * doh_feed()'s first failure, or 0. */
static int pump(struct doh_session *s)
{
	int rc = 0;

	for (int round = 0; round < PUMP_ROUNDS; round++)
		if (client_to_server(s) + server_to_client(s, &rc) == 0)
			return rc;
	fail_msg("no quiet after %d rounds", PUMP_ROUNDS);
	return rc;
}

static ssize_t srv_read(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t length,
			uint32_t *flags, nghttp2_data_source *source, void *arg)
{
	size_t n = srv.out_len - srv.out_off;

	(void)h2;
	(void)id;
	(void)source;
	(void)arg;
	if (n > length)
		n = length;
	memcpy(buf, srv.out_body + srv.out_off, n);
	srv.out_off += n;
	if (srv.out_off == srv.out_len)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

/* The server answers @id with @status, content type @ctype (NULL: none), an
 * Age header @age (NULL: none) and @len bytes of @body, then everything
 * is pumped. */
static void respond(struct doh_session *s, int32_t id, const char *status, const char *ctype,
		    const char *age, const uint8_t *body, size_t len)
{
	nghttp2_nv nv[3];
	size_t n = 0;

#define SRV_NV(name, value)                                                                        \
	nv[n++] = (nghttp2_nv){ (uint8_t *)(name), (uint8_t *)(value), strlen(name),               \
				strlen(value), NGHTTP2_NV_FLAG_NONE }
	SRV_NV(":status", status);
	if (ctype)
		SRV_NV("content-type", ctype);
	if (age)
		SRV_NV("age", age);
#undef SRV_NV
	srv.out_body = body;
	srv.out_len = len;
	srv.out_off = 0;
	nghttp2_data_provider prd = { .read_callback = srv_read };
	assert_int_equal(nghttp2_submit_response(srv.h2, id, nv, n, &prd), 0);
	pump(s);
}

/* -- DNS messages ------------------------------------------------------------------ */

static void query(struct msg *m, const char *name)
{
	put_header(m, 0, WIRE_FLAG_RD, 1, 0, 0, 0);
	put_name(m, name);
	put16(m, TYPE_A);
	put16(m, WIRE_CLASS_IN);
}

/* An answer to @name with one A record of TTL @ttl, message ID @id. */
static void answer(struct msg *m, const char *name, unsigned id, uint32_t ttl)
{
	put_header(m, id, WIRE_FLAG_QR | WIRE_FLAG_RD | WIRE_FLAG_RA, 1, 1, 0, 0);
	put_name(m, name);
	put16(m, TYPE_A);
	put16(m, WIRE_CLASS_IN);
	put_ptr(m, WIRE_HEADER_LEN);
	put_rr_fixed(m, TYPE_A, WIRE_CLASS_IN, ttl, 4);
	put32(m, 0xc0000201);
}

static struct doh_session *new_session(enum doh_method method, unsigned max_streams)
{
	struct doh_session *s = doh_session_new("dns.test", "/dns-query", method);

	assert_non_null(s);
	server_init(max_streams);
	assert_int_equal(pump(s), 0);
	return s;
}

static int32_t submit(struct doh_session *s, const char *name, void *user)
{
	struct msg m;

	query(&m, name);
	int32_t id = doh_submit(s, m.b, m.len, user);
	assert_true(id > 0);
	return id;
}

static void next_stream(struct doh_session *s, struct doh_event *ev)
{
	assert_true(doh_next_event(s, ev));
	assert_int_equal(ev->type, DOH_EV_STREAM);
}

static void finish(struct doh_session *s)
{
	doh_session_free(s);
	server_deinit();
}

/* -- tests -------------------------------------------------------------------------- */

/* RFC 8484 §4.1: POST, the message as the body, application/dns-message
 * both ways, no User-Agent; the answer comes back as an event. */
static void post_request_and_answer(void **state)
{
	(void)state;
	struct doh_session *s = new_session(DOH_POST, 100);
	struct doh_event ev;
	struct msg q, a;
	int user;

	query(&q, "www.example");
	int32_t id = doh_submit(s, q.b, q.len, &user);
	assert_int_equal(id, 1);
	assert_int_equal(doh_streams(s), 1);
	assert_false(doh_stream_sent(s, id));
	assert_false(doh_next_event(s, &ev));
	assert_int_equal(pump(s), 0);
	assert_true(doh_stream_sent(s, id));

	struct req *r = req_of(id);
	assert_non_null(r);
	assert_string_equal(r->method, "POST");
	assert_string_equal(r->path, "/dns-query");
	assert_string_equal(r->authority, "dns.test");
	assert_string_equal(r->content_type, "application/dns-message");
	assert_string_equal(r->accept, "application/dns-message");
	assert_int_equal(strtoul(r->content_length, NULL, 10), q.len);
	assert_false(r->user_agent);
	assert_int_equal(r->headers, 7); /* :method :scheme :authority :path and those 3 */
	assert_true(r->ended);
	assert_int_equal(r->body_len, q.len);
	assert_memory_equal(r->body, q.b, q.len);

	answer(&a, "www.example", 0, 300);
	respond(s, id, "200", "application/dns-message", NULL, a.b, a.len);
	next_stream(s, &ev);
	assert_int_equal(ev.stream_id, id);
	assert_ptr_equal(ev.user, &user);
	assert_int_equal(ev.result, DOH_ANSWER);
	assert_int_equal(ev.status, 200);
	assert_int_equal(ev.age, 0);
	assert_int_equal(ev.body_len, a.len);
	assert_memory_equal(ev.body, a.b, a.len);
	assert_false(doh_next_event(s, &ev));
	assert_int_equal(doh_streams(s), 0);
	assert_int_equal(srv.rsts, 0);
	finish(s);
}

/* Queries submitted together go out one whole request after another: a
 * POST's body right after its HEADERS, not all the HEADERS first (Knot
 * Resolver refuses a stream that begins while another is incomplete). */
static void requests_leave_whole_and_in_order(void **state)
{
	(void)state;
	struct doh_session *s = new_session(DOH_POST, 100);
	int user;

	srv.order[0] = '\0';
	assert_int_equal(submit(s, "a.example", &user), 1);
	assert_int_equal(submit(s, "b.example", &user), 3);
	assert_int_equal(submit(s, "c.example", &user), 5);
	assert_int_equal(doh_streams(s), 3);
	assert_int_equal(doh_room(s), 97);
	pump(s);
	assert_string_equal(srv.order, "H1D1H3D3H5D5");
	assert_true(doh_stream_sent(s, 5));
	finish(s);
}

/* Decode unpadded base64url (the test's own, to check the encoder). */
static size_t unbase64url(const char *in, uint8_t *out)
{
	static const char abc[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	uint32_t acc = 0;
	unsigned bits = 0;
	size_t n = 0;

	for (; *in; in++) {
		const char *p = strchr(abc, *in);
		assert_non_null(p);
		acc = acc << 6 | (uint32_t)(p - abc);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[n++] = (uint8_t)(acc >> bits);
		}
	}
	return n;
}

/* RFC 8484 §4.1 and §6: GET carries the message base64url-encoded without
 * padding in dns=, and no body. */
static void get_request_base64url(void **state)
{
	(void)state;
	struct doh_session *s = new_session(DOH_GET, 100);
	uint8_t decoded[DOH_MAX_GET_PATH];

	for (unsigned extra = 0; extra < 3; extra++) {
		struct msg q;
		char name[64];
		/* Three lengths: every remainder of the encoding. */
		snprintf(name, sizeof(name), "%.*swww.example", (int)extra, "aaa");
		query(&q, extra ? name + extra - 1 : name);
		if (extra)
			q.b[q.len++] = 0xfb; /* garbage after the question: bytes are bytes */
		int32_t id = doh_submit(s, q.b, q.len, &decoded);
		assert_int_equal(pump(s), 0);
		struct req *r = req_of(id);
		assert_string_equal(r->method, "GET");
		assert_int_equal(strncmp(r->path, "/dns-query?dns=", 15), 0);
		assert_null(strpbrk(r->path + 15, "=+/")); /* base64url, no padding */
		assert_int_equal(unbase64url(r->path + 15, decoded), q.len);
		assert_memory_equal(decoded, q.b, q.len);
		assert_string_equal(r->accept, "application/dns-message");
		assert_string_equal(r->content_type, "");
		assert_false(r->user_agent);
		assert_int_equal(r->body_len, 0);
		assert_true(r->ended);
	}
	finish(s);

	/* A path with a query string gets &dns=. */
	s = doh_session_new("[::1]:8443", "/q?x=1", DOH_GET);
	server_init(100);
	int32_t id = submit(s, "www.example", &decoded);
	assert_int_equal(pump(s), 0);
	assert_int_equal(strncmp(req_of(id)->path, "/q?x=1&dns=", 11), 0);
	assert_string_equal(req_of(id)->authority, "[::1]:8443");

	/* A message too long for a URL goes as a POST. */
	struct msg big;
	query(&big, "www.example");
	memset(big.b + big.len, 0, 4000);
	big.len += 4000;
	id = doh_submit(s, big.b, big.len, &decoded);
	assert_int_equal(pump(s), 0);
	assert_string_equal(req_of(id)->method, "POST");
	assert_int_equal(req_of(id)->body_len, big.len);
	finish(s);
}

/* Only 200 + application/dns-message + a body of at most 65,535 bytes is
 * an answer; the rest say what they were. */
static void responses_that_are_not_answers(void **state)
{
	(void)state;
	struct doh_session *s = new_session(DOH_POST, 100);
	struct doh_event ev;
	struct msg a;
	static uint8_t huge[3 * DOH_MAX_BODY];
	int user;

	answer(&a, "www.example", 0, 300);
	int32_t id = submit(s, "www.example", &user);
	pump(s);
	respond(s, id, "503", "text/plain", NULL, (const uint8_t *)"busy", 4);
	next_stream(s, &ev);
	assert_int_equal(ev.result, DOH_HTTP_STATUS);
	assert_int_equal(ev.status, 503);
	assert_null(ev.body);

	id = submit(s, "www.example", &user);
	pump(s);
	respond(s, id, "404", "application/dns-message", NULL, a.b, a.len);
	next_stream(s, &ev);
	assert_int_equal(ev.result, DOH_HTTP_STATUS);
	assert_int_equal(ev.status, 404);

	id = submit(s, "www.example", &user);
	pump(s);
	respond(s, id, "200", "text/html", NULL, a.b, a.len);
	next_stream(s, &ev);
	assert_int_equal(ev.result, DOH_CONTENT_TYPE);
	assert_null(ev.body);

	id = submit(s, "www.example", &user);
	pump(s);
	respond(s, id, "200", NULL, NULL, a.b, a.len);
	next_stream(s, &ev);
	assert_int_equal(ev.result, DOH_CONTENT_TYPE);

	id = submit(s, "www.example", &user);
	pump(s);
	respond(s, id, "200", "application/dns-messages", NULL, a.b, a.len);
	next_stream(s, &ev);
	assert_int_equal(ev.result, DOH_CONTENT_TYPE);

	/* Case and parameters do not matter. */
	id = submit(s, "www.example", &user);
	pump(s);
	respond(s, id, "200", "Application/DNS-Message; charset=binary", NULL, a.b, a.len);
	next_stream(s, &ev);
	assert_int_equal(ev.result, DOH_ANSWER);

	/* 65,535 bytes pass, 65,536 do not.  The frame that crossed the line
	 * ended the stream: nothing to reset. */
	id = submit(s, "www.example", &user);
	pump(s);
	respond(s, id, "200", "application/dns-message", NULL, huge, DOH_MAX_BODY);
	next_stream(s, &ev);
	assert_int_equal(ev.result, DOH_ANSWER);
	assert_int_equal(ev.body_len, DOH_MAX_BODY);
	unsigned rsts = srv.rsts;
	id = submit(s, "www.example", &user);
	pump(s);
	respond(s, id, "200", "application/dns-message", NULL, huge, DOH_MAX_BODY + 1);
	next_stream(s, &ev);
	assert_int_equal(ev.result, DOH_TOO_LARGE);
	assert_null(ev.body);
	assert_int_equal(srv.rsts, rsts);
	/* Far more, still coming when the line is crossed: the stream is reset. */
	id = submit(s, "www.example", &user);
	pump(s);
	respond(s, id, "200", "application/dns-message", NULL, huge, sizeof(huge));
	next_stream(s, &ev);
	assert_int_equal(ev.result, DOH_TOO_LARGE);
	assert_int_equal(srv.rsts, rsts + 1);
	assert_int_equal(req_of(id)->reset_code, NGHTTP2_CANCEL);
	assert_false(doh_next_event(s, &ev));
	assert_int_equal(doh_streams(s), 0);
	finish(s);
}

/* RFC 8484 §5.1: the Age header is reported, and doh_check_answer() takes it
 * off every TTL, never below 0. */
static void age_header_reduces_ttls(void **state)
{
	(void)state;
	struct doh_session *s = new_session(DOH_POST, 100);
	struct doh_event ev;
	struct wire_info info;
	struct msg a;
	int user;

	answer(&a, "www.example", 0, 300);
	int32_t id = submit(s, "www.example", &user);
	pump(s);
	respond(s, id, "200", "application/dns-message", "100", a.b, a.len);
	next_stream(s, &ev);
	assert_int_equal(ev.result, DOH_ANSWER);
	assert_int_equal(ev.age, 100);
	assert_int_equal(doh_check_answer(ev.body, ev.body_len, ev.age, &info), 0);
	assert_int_equal(wire_read16(ev.body + ev.body_len - 10) << 16 |
			     wire_read16(ev.body + ev.body_len - 8),
			 200);

	id = submit(s, "www.example", &user);
	pump(s);
	respond(s, id, "200", "application/dns-message", "99999", a.b, a.len);
	next_stream(s, &ev);
	assert_int_equal(ev.age, 99999);
	assert_int_equal(doh_check_answer(ev.body, ev.body_len, ev.age, &info), 0);
	assert_int_equal(wire_read16(ev.body + ev.body_len - 8), 0);
	assert_int_equal(wire_read16(ev.body + ev.body_len - 10), 0);

	id = submit(s, "www.example", &user);
	pump(s);
	respond(s, id, "200", "application/dns-message", "-5", a.b, a.len);
	next_stream(s, &ev);
	assert_int_equal(ev.age, 0); /* not a number: no Age */
	finish(s);
}

/* What doh_check_answer() refuses: not a response, an ID we did not send,
 * bytes that do not parse. */
static void check_answer_rejects(void **state)
{
	(void)state;
	struct wire_info info;
	struct msg m;

	answer(&m, "www.example", 0, 300);
	assert_int_equal(doh_check_answer(m.b, m.len, 0, &info), 0);
	answer(&m, "www.example", 0x1234, 300);
	assert_int_equal(doh_check_answer(m.b, m.len, 0, &info), -1);
	query(&m, "www.example");
	assert_int_equal(doh_check_answer(m.b, m.len, 0, &info), -1);
	answer(&m, "www.example", 0, 300);
	assert_int_equal(doh_check_answer(m.b, m.len - 1, 0, &info), -1);
	assert_int_equal(doh_check_answer(m.b, 0, 0, &info), -1);
}

/* Does the OPT of the parsed @msg carry option @code? */
static bool has_option(const uint8_t *msg, const struct wire_info *info, unsigned code)
{
	const uint8_t *rdata = msg + info->opt_start + 11;
	size_t rdlen = info->opt_end - info->opt_start - 11;

	for (size_t o = 0; o + 4 <= rdlen; o += 4u + wire_read16(rdata + o + 2))
		if (wire_read16(rdata + o) == code)
			return true;
	return false;
}

/* The query as DoH sends it: ID 0, no edns-tcp-keepalive (RFC 8484 §5.3),
 * padded to 128-byte blocks when padding is on (RFC 8467), the rest (DO
 * bit, question, harmless options) as the other transports send it. */
static void query_form_for_doh(void **state)
{
	(void)state;
	static const struct wire_upstream_opts all = { .pad = true, .keepalive = true };
	uint8_t upstream[1024], out[1024 + DOH_QUERY_SLACK];
	struct wire_info info;
	struct msg q;

	query(&q, "www.example");
	set16(&q, 0, 0x1234);
	assert_int_equal(wire_parse(q.b, q.len, &info), 0);
	size_t len = wire_make_upstream_query(q.b, &info, &all, upstream, sizeof(upstream));
	assert_true(len > 0);
	assert_int_equal(wire_parse(upstream, len, &info), 0);
	assert_true(has_option(upstream, &info, WIRE_OPT_KEEPALIVE)); /* as DoT sends it */

	for (int pad = 0; pad <= 1; pad++) {
		size_t n = doh_make_query(upstream, len, pad, out, sizeof(out));
		assert_true(n > 0);
		assert_int_equal(wire_parse(out, n, &info), 0);
		assert_int_equal(info.id, 0);
		assert_true(info.has_edns);
		assert_false(has_option(out, &info, WIRE_OPT_KEEPALIVE));
		assert_int_equal(has_option(out, &info, WIRE_OPT_PADDING), pad);
		if (pad)
			assert_int_equal(n % WIRE_PAD_BLOCK, 0);
		else
			assert_true(n < WIRE_PAD_BLOCK);
		assert_int_equal(info.question_end, WIRE_HEADER_LEN + 13 + 4);
		assert_memory_equal(out + 2, upstream + 2, info.question_end - 2);
	}
	assert_int_equal(doh_make_query(upstream, 5, true, out, sizeof(out)), 0);
	assert_int_equal(doh_make_query(upstream, len, true, out, 20), 0);
}

/* RST_STREAM REFUSED_STREAM: not processed (RFC 9113 §8.7); any other reset
 * before the response is complete: maybe processed.  Only that stream
 * ends. */
static void refused_and_reset_streams(void **state)
{
	(void)state;
	struct doh_session *s = new_session(DOH_POST, 100);
	struct doh_event ev;
	struct msg a;
	int u1, u2, u3;

	int32_t id1 = submit(s, "a.example", &u1);
	int32_t id2 = submit(s, "b.example", &u2);
	int32_t id3 = submit(s, "www.example", &u3);
	pump(s);
	assert_int_equal(nghttp2_submit_rst_stream(srv.h2, 0, id1, NGHTTP2_REFUSED_STREAM), 0);
	assert_int_equal(nghttp2_submit_rst_stream(srv.h2, 0, id2, NGHTTP2_INTERNAL_ERROR), 0);
	pump(s);
	next_stream(s, &ev);
	assert_ptr_equal(ev.user, &u1);
	assert_int_equal(ev.result, DOH_REFUSED);
	assert_int_equal(ev.error_code, NGHTTP2_REFUSED_STREAM);
	assert_string_equal(doh_error_code_name(ev.error_code), "REFUSED_STREAM");
	next_stream(s, &ev);
	assert_ptr_equal(ev.user, &u2);
	assert_int_equal(ev.result, DOH_RESET);
	assert_int_equal(ev.error_code, NGHTTP2_INTERNAL_ERROR);
	assert_false(doh_next_event(s, &ev));
	assert_false(doh_closing(s));

	answer(&a, "www.example", 0, 300);
	respond(s, id3, "200", "application/dns-message", NULL, a.b, a.len);
	next_stream(s, &ev);
	assert_ptr_equal(ev.user, &u3);
	assert_int_equal(ev.result, DOH_ANSWER);
	assert_int_equal(srv.rsts, 0); /* we reset nothing */
	finish(s);
}

/* Streams sent before the server's SETTINGS arrived may exceed a limit we
 * could not know; a server may reset those PROTOCOL_ERROR rather than
 * REFUSED_STREAM (RFC 9113 §5.1.2).  Unprocessed either way; later, a
 * PROTOCOL_ERROR is a reset like any other. */
static void protocol_error_before_settings_is_a_refusal(void **state)
{
	(void)state;
	struct doh_session *s = doh_session_new("dns.test", "/dns-query", DOH_POST);
	struct doh_event ev;
	int u1, u2, u3;
	int rc = 0;

	assert_non_null(s);
	server_init(0);
	submit(s, "a.example", &u1);
	int32_t id2 = submit(s, "b.example", &u2);
	client_to_server(s); /* out before the server's SETTINGS came in */
	server_to_client(s, &rc);
	assert_int_equal(nghttp2_submit_rst_stream(srv.h2, 0, id2, NGHTTP2_PROTOCOL_ERROR), 0);
	pump(s);
	next_stream(s, &ev);
	assert_ptr_equal(ev.user, &u2);
	assert_int_equal(ev.result, DOH_REFUSED);
	int32_t id3 = submit(s, "c.example", &u3);
	pump(s);
	assert_int_equal(nghttp2_submit_rst_stream(srv.h2, 0, id3, NGHTTP2_PROTOCOL_ERROR), 0);
	pump(s);
	next_stream(s, &ev);
	assert_ptr_equal(ev.user, &u3);
	assert_int_equal(ev.result, DOH_RESET);
	finish(s);
}

/* SETTINGS_MAX_CONCURRENT_STREAMS: 100 assumed until the server says; then
 * its number, and never more open at once (nghttp2 would queue them). */
static void room_follows_max_concurrent_streams(void **state)
{
	(void)state;
	struct doh_session *s = doh_session_new("dns.test", "/dns-query", DOH_POST);
	struct doh_event ev;
	struct msg q, a;
	int user;

	assert_non_null(s);
	assert_int_equal(doh_room(s), DOH_ASSUMED_STREAMS);
	server_init(1);
	pump(s);
	assert_int_equal(doh_room(s), 1);
	int32_t id = submit(s, "www.example", &user);
	assert_int_equal(doh_room(s), 0);
	query(&q, "www.example");
	assert_int_equal(doh_submit(s, q.b, q.len, &user), DOH_EFULL);
	assert_false(doh_closing(s));
	pump(s);
	answer(&a, "www.example", 0, 300);
	respond(s, id, "200", "application/dns-message", NULL, a.b, a.len);
	assert_int_equal(doh_room(s), 1);
	next_stream(s, &ev);
	assert_int_equal(ev.result, DOH_ANSWER);

	/* More than we ever open at once: our own cap. */
	nghttp2_settings_entry more = { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100000 };
	assert_int_equal(nghttp2_submit_settings(srv.h2, NGHTTP2_FLAG_NONE, &more, 1), 0);
	pump(s);
	assert_int_equal(doh_room(s), DOH_MAX_STREAMS);
	assert_int_equal(doh_submit(s, q.b, 0, &user), DOH_EINVAL);
	assert_int_equal(doh_submit(s, q.b, DOH_MAX_BODY + 1, &user), DOH_EINVAL);
	finish(s);
}

/* GOAWAY: no new stream; those above its last stream ID come back refused
 * (whether sent or not), the others still get their answers, and the
 * session is finished when the last one ends. */
static void goaway_refuses_later_streams(void **state)
{
	(void)state;
	struct doh_session *s = new_session(DOH_POST, 100);
	struct doh_event ev;
	struct msg a, q;
	int u1, u2, u3, u4;

	int32_t id1 = submit(s, "www.example", &u1);
	int32_t id2 = submit(s, "b.example", &u2);
	int32_t id3 = submit(s, "c.example", &u3);
	pump(s);
	submit(s, "d.example", &u4); /* not sent yet when the GOAWAY arrives */
	assert_int_equal(nghttp2_submit_goaway(srv.h2, 0, id1, NGHTTP2_NO_ERROR, NULL, 0), 0);
	int rc = 0;
	server_to_client(s, &rc);
	assert_int_equal(rc, 0);
	assert_true(doh_closing(s));
	assert_int_equal(doh_room(s), 0);
	query(&q, "e.example");
	assert_int_equal(doh_submit(s, q.b, q.len, &u4), DOH_ECLOSING);
	assert_true(doh_next_event(s, &ev));
	assert_int_equal(ev.type, DOH_EV_GOAWAY);
	assert_int_equal(ev.last_stream_id, id1);
	assert_int_equal(ev.error_code, NGHTTP2_NO_ERROR);
	/* The two sent above its last stream ID, and the one never sent. */
	bool seen2 = false, seen3 = false, seen4 = false;
	for (int i = 0; i < 3; i++) {
		next_stream(s, &ev);
		assert_int_equal(ev.result, DOH_REFUSED);
		assert_int_equal(ev.error_code, NGHTTP2_REFUSED_STREAM);
		seen2 |= ev.user == &u2;
		seen3 |= ev.user == &u3;
		seen4 |= ev.user == &u4;
	}
	assert_true(seen2 && seen3 && seen4);
	assert_false(doh_next_event(s, &ev));
	pump(s);
	assert_null(req_of(id3 + 2)); /* the unsent one never left */
	assert_false(doh_finished(s));
	answer(&a, "www.example", 0, 300);
	respond(s, id1, "200", "application/dns-message", NULL, a.b, a.len);
	next_stream(s, &ev);
	assert_int_equal(ev.result, DOH_ANSWER);
	assert_ptr_equal(ev.user, &u1);
	assert_false(doh_next_event(s, &ev));
	assert_true(doh_finished(s));
	(void)id2;
	(void)id3;
	finish(s);
}

/* Cancelling: an open stream is reset (CANCEL) and reports nothing; a
 * stream whose response is complete is never reset, whether its event was
 * taken or is still queued. */
static void cancel_resets_only_unfinished_streams(void **state)
{
	(void)state;
	struct doh_session *s = new_session(DOH_POST, 100);
	struct doh_event ev;
	struct msg a;
	int u1, u2, u3;

	int32_t id1 = submit(s, "www.example", &u1);
	int32_t id2 = submit(s, "www.example", &u2);
	int32_t id3 = submit(s, "www.example", &u3);
	pump(s);
	doh_cancel(s, id1);
	pump(s);
	assert_int_equal(srv.rsts, 1);
	assert_true(req_of(id1)->reset);
	assert_int_equal(req_of(id1)->reset_code, NGHTTP2_CANCEL);
	assert_int_equal(doh_streams(s), 2);
	assert_false(doh_next_event(s, &ev));

	answer(&a, "www.example", 0, 300);
	respond(s, id2, "200", "application/dns-message", NULL, a.b, a.len);
	respond(s, id3, "200", "application/dns-message", NULL, a.b, a.len);
	next_stream(s, &ev);
	assert_int_equal(ev.stream_id, id2);
	doh_cancel(s, id2); /* as the upstream layer does when it takes an answer */
	assert_memory_equal(ev.body, a.b, a.len); /* still valid until the next event */
	doh_cancel(s, id3); /* complete, event still queued: dropped, not reset */
	assert_false(doh_next_event(s, &ev));
	pump(s);
	assert_int_equal(srv.rsts, 1);
	assert_int_equal(doh_streams(s), 0);

	/* A request cancelled before it went out never leaves. */
	int32_t id4 = submit(s, "www.example", &u1);
	doh_cancel(s, id4);
	pump(s);
	assert_null(req_of(id4));
	assert_int_equal(doh_streams(s), 0);
	assert_false(doh_next_event(s, &ev));
	doh_cancel(s, 99); /* unknown: nothing */
	finish(s);
}

static void ping_is_answered(void **state)
{
	(void)state;
	struct doh_session *s = new_session(DOH_POST, 100);
	struct doh_event ev;

	assert_int_equal(doh_ping(s), 0);
	assert_false(doh_next_event(s, &ev));
	pump(s);
	assert_true(doh_next_event(s, &ev));
	assert_int_equal(ev.type, DOH_EV_PING_ACK);
	assert_false(doh_next_event(s, &ev));
	finish(s);
}

/* Stream IDs run out at 2^31 - 1: the session takes no more, and says so. */
static void stream_ids_run_out(void **state)
{
	(void)state;
	struct doh_session *s = new_session(DOH_POST, 100);
	struct doh_event ev;
	struct msg q, a;
	int user;

	assert_int_equal(doh_set_next_stream_id(s, INT32_MAX - 2), 0);
	assert_int_equal(doh_set_next_stream_id(s, 2), DOH_EINVAL);
	assert_int_equal(doh_room(s), 2);
	assert_int_equal(submit(s, "www.example", &user), INT32_MAX - 2);
	int32_t last = submit(s, "www.example", &user);
	assert_int_equal(last, INT32_MAX);
	assert_int_equal(doh_room(s), 0);
	assert_true(doh_closing(s));
	query(&q, "www.example");
	assert_int_equal(doh_submit(s, q.b, q.len, &user), DOH_ECLOSING);
	pump(s);
	answer(&a, "www.example", 0, 300);
	respond(s, last, "200", "application/dns-message", NULL, a.b, a.len);
	next_stream(s, &ev);
	assert_int_equal(ev.result, DOH_ANSWER);
	finish(s);
}

/* Garbage from the server breaks the session: doh_feed() says so, and
 * the GOAWAY that tells the server why is in the output. */
static void protocol_error_breaks_session(void **state)
{
	(void)state;
	struct doh_session *s = new_session(DOH_POST, 100);
	static const uint8_t junk[] = "\0\0\4\x08\0\0\0\0\0xxxxxxxxxxxxxxxxx";
	const uint8_t *p;

	int rc = doh_feed(s, junk, sizeof(junk));
	while (doh_output(s, &p) > 0)
		;
	assert_true(rc == DOH_EPROTO || doh_finished(s));
	assert_true(doh_finished(s));
	assert_true(doh_closing(s));
	assert_non_null(strstr(doh_error(s), "HTTP/2"));
	assert_int_equal(doh_feed(s, junk, 1), DOH_EPROTO);
	finish(s);
}

/* Our own close: a GOAWAY with NO_ERROR, and nothing opens after it. */
static void shutdown_sends_goaway(void **state)
{
	(void)state;
	struct doh_session *s = new_session(DOH_POST, 100);
	struct msg q;
	int user;

	doh_shutdown(s);
	assert_true(doh_closing(s));
	query(&q, "www.example");
	assert_int_equal(doh_submit(s, q.b, q.len, &user), DOH_ECLOSING);
	pump(s);
	assert_int_equal(srv.goaways, 1);
	assert_int_equal(srv.goaway_code, NGHTTP2_NO_ERROR);
	assert_true(doh_finished(s));
	assert_string_equal(doh_error(s), "HTTP/2 session failed"); /* nothing broke */
	finish(s);
}

/* A response split into many small DATA frames and interleaved with
 * another's comes out whole and in the order the streams ended. */
static void interleaved_responses(void **state)
{
	(void)state;
	struct doh_session *s = new_session(DOH_POST, 100);
	struct doh_event ev;
	struct msg a1, a2;
	int u1, u2;

	int32_t id1 = submit(s, "one.example", &u1);
	int32_t id2 = submit(s, "two.example", &u2);
	pump(s);
	answer(&a1, "one.example", 0, 1);
	answer(&a2, "two.example", 0, 2);
	respond(s, id2, "200", "application/dns-message", NULL, a2.b, a2.len);
	respond(s, id1, "200", "application/dns-message", NULL, a1.b, a1.len);
	next_stream(s, &ev);
	assert_ptr_equal(ev.user, &u2);
	assert_memory_equal(ev.body, a2.b, a2.len);
	next_stream(s, &ev);
	assert_ptr_equal(ev.user, &u1);
	assert_memory_equal(ev.body, a1.b, a1.len);
	finish(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(post_request_and_answer),
		cmocka_unit_test(get_request_base64url),
		cmocka_unit_test(requests_leave_whole_and_in_order),
		cmocka_unit_test(responses_that_are_not_answers),
		cmocka_unit_test(age_header_reduces_ttls),
		cmocka_unit_test(check_answer_rejects),
		cmocka_unit_test(query_form_for_doh),
		cmocka_unit_test(refused_and_reset_streams),
		cmocka_unit_test(room_follows_max_concurrent_streams),
		cmocka_unit_test(protocol_error_before_settings_is_a_refusal),
		cmocka_unit_test(goaway_refuses_later_streams),
		cmocka_unit_test(cancel_resets_only_unfinished_streams),
		cmocka_unit_test(ping_is_answered),
		cmocka_unit_test(stream_ids_run_out),
		cmocka_unit_test(protocol_error_breaks_session),
		cmocka_unit_test(shutdown_sends_goaway),
		cmocka_unit_test(interleaved_responses),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
