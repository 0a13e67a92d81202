/*
 * Unit tests for lib/doh_server: an nghttp2 *client* session talks to the
 * server session entirely in memory (bytes pumped both ways until both are
 * quiet), and raw frames stand in for what no polite client sends.  Each
 * RFC 8484 behaviour and each limit has a test here: GET, POST and HEAD,
 * every status code, cache-control, streams reset before and after their
 * query was handed out, the stream limit, Rapid Reset, CONTINUATION floods,
 * oversized headers and bodies, flow control, GOAWAY both ways, HTTP/1.1,
 * and base64url.
 */
#include "lib/doh_server.h"

#include "lib/wire.h"
#include "tests/unit/msg_builder.h"

#include <nghttp2/nghttp2.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

enum { MAX_RESP = 2100, MAX_EVENTS = 2100 };

struct resp {
	int32_t id;
	int status;
	char content_type[64], cache_control[64], content_length[64], allow[64];
	uint8_t body[70000];
	size_t body_len;
	bool ended;
	bool closed;
	uint32_t close_code;
};

/* Both ends and what each saw. */
struct pair {
	struct doh_server *server;
	nghttp2_session *client;
	struct resp *resp; /* MAX_RESP */
	unsigned n_resp;
	bool goaway;
	uint32_t goaway_code;
	int feed_rc; /* the last non-zero doh_server_feed() result */
	/* server events, as taken */
	struct doh_server_event ev[MAX_EVENTS];
	uint8_t ev_msg[64][512]; /* copies of the first messages */
	unsigned n_ev;
	/* how the test answers queries as they come: 0 hold, 1 echo as answer */
	int answer;
	/* POST bodies the client uploads */
	struct upload {
		const uint8_t *data;
		size_t len, off;
	} uploads[64];
	unsigned n_uploads;
	size_t upload_off;     /* how much of the last one went */
	uint8_t out1[1 << 20]; /* raw bytes the server sent (when captured) */
	size_t out1_len;
	bool capture;
};

static struct resp *resp_of(struct pair *p, int32_t id, bool create)
{
	for (unsigned i = 0; i < p->n_resp; i++)
		if (p->resp[i].id == id)
			return &p->resp[i];
	if (!create)
		return NULL;
	assert_true(p->n_resp < MAX_RESP);
	struct resp *r = &p->resp[p->n_resp++];
	memset(r, 0, sizeof(*r));
	r->id = id;
	return r;
}

static int c_on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
		       size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
		       void *u)
{
	struct pair *p = u;
	struct resp *r = resp_of(p, frame->hd.stream_id, true);
	char v[16]; /* the status */

	if (valuelen > 63)
		valuelen = 63; /* every field we keep has room for 63 */

	(void)s, (void)flags;
	snprintf(v, sizeof(v), "%.*s", (int)valuelen, (const char *)value);
	if (namelen == 7 && memcmp(name, ":status", 7) == 0)
		r->status = atoi(v);
	else if (namelen == 12 && memcmp(name, "content-type", 12) == 0)
		snprintf(r->content_type, sizeof(r->content_type), "%.*s", (int)valuelen, value);
	else if (namelen == 13 && memcmp(name, "cache-control", 13) == 0)
		snprintf(r->cache_control, sizeof(r->cache_control), "%.*s", (int)valuelen, value);
	else if (namelen == 14 && memcmp(name, "content-length", 14) == 0)
		snprintf(r->content_length, sizeof(r->content_length), "%.*s", (int)valuelen,
			 value);
	else if (namelen == 5 && memcmp(name, "allow", 5) == 0)
		snprintf(r->allow, sizeof(r->allow), "%.*s", (int)valuelen, value);
	return 0;
}

static int c_on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
		     void *u)
{
	struct pair *p = u;
	struct resp *r = resp_of(p, id, true);

	(void)s, (void)flags;
	assert_true(r->body_len + len <= sizeof(r->body));
	memcpy(r->body + r->body_len, data, len);
	r->body_len += len;
	return 0;
}

static int c_on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *u)
{
	struct pair *p = u;

	(void)s;
	if (frame->hd.type == NGHTTP2_GOAWAY) {
		p->goaway = true;
		p->goaway_code = frame->goaway.error_code;
	}
	if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
	    (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
		resp_of(p, frame->hd.stream_id, true)->ended = true;
	return 0;
}

static int c_on_close(nghttp2_session *s, int32_t id, uint32_t code, void *u)
{
	struct pair *p = u;
	struct resp *r = resp_of(p, id, true);

	(void)s;
	r->closed = true;
	r->close_code = code;
	return 0;
}

static void handle_events(struct pair *p)
{
	struct doh_server_event ev;

	while (doh_server_next_event(p->server, &ev)) {
		assert_true(p->n_ev < MAX_EVENTS);
		if (ev.type == DOH_SERVER_QUERY && p->n_ev < 64 && ev.len <= 512) {
			memcpy(p->ev_msg[p->n_ev], ev.msg, ev.len);
			ev.msg = p->ev_msg[p->n_ev];
		}
		p->ev[p->n_ev++] = ev;
		if (ev.type == DOH_SERVER_QUERY && p->answer == 1) {
			uint8_t a[512];
			assert_true(ev.len <= sizeof(a));
			memcpy(a, ev.msg, ev.len);
			a[2] |= 0x80; /* QR: the query itself, as an answer with nothing in it */
			assert_int_equal(doh_server_respond(p->server, ev.stream_id, a, ev.len), 0);
		}
	}
}

/* Move bytes both ways until neither side has anything to say. */
static void pump(struct pair *p)
{
	for (int round = 0; round < 10000; round++) {
		bool moved = false;
		const uint8_t *data;
		ssize_t n;
		while ((n = nghttp2_session_mem_send(p->client, &data)) > 0) {
			int rc = doh_server_feed(p->server, data, (size_t)n);
			if (rc)
				p->feed_rc = rc;
			handle_events(p);
			moved = true;
		}
		assert_true(n == 0);
		size_t len;
		const uint8_t *out;
		while ((out = doh_server_output(p->server, &len)), len > 0) {
			if (p->capture && p->out1_len + len <= sizeof(p->out1)) {
				memcpy(p->out1 + p->out1_len, out, len);
				p->out1_len += len;
			}
			nghttp2_session_mem_recv(p->client, out, len);
			moved = true;
		}
		if (!moved)
			return;
	}
	fail_msg("the two sides never went quiet");
}

static struct pair *pair_new(const char *path)
{
	struct pair *p = calloc(1, sizeof(*p));
	nghttp2_session_callbacks *cbs;
	nghttp2_option *opt;

	assert_non_null(p);
	p->resp = calloc(MAX_RESP, sizeof(*p->resp));
	assert_non_null(p->resp);
	p->server = doh_server_new(path);
	assert_non_null(p->server);
	assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
	nghttp2_session_callbacks_set_on_header_callback(cbs, c_on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, c_on_data);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, c_on_frame_recv);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, c_on_close);
	assert_int_equal(nghttp2_option_new(&opt), 0);
	/* Let tests open more streams than the server allows, before its
	 * SETTINGS arrive. */
	nghttp2_option_set_peer_max_concurrent_streams(opt, 10000);
	assert_int_equal(nghttp2_session_client_new2(&p->client, cbs, p, opt), 0);
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cbs);
	nghttp2_settings_entry iv[] = { { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20 } };
	assert_int_equal(nghttp2_submit_settings(p->client, NGHTTP2_FLAG_NONE, iv, 1), 0);
	nghttp2_session_set_local_window_size(p->client, NGHTTP2_FLAG_NONE, 0, 1 << 24);
	return p;
}

static void pair_free(struct pair *p)
{
	doh_server_free(p->server);
	nghttp2_session_del(p->client);
	free(p->resp);
	free(p);
}

static int setup(void **state)
{
	*state = pair_new("/dns-query");
	return 0;
}

static int teardown(void **state)
{
	pair_free(*state);
	return 0;
}

/* -- requests ------------------------------------------------------------------------ */

#define HDR(n, v)                                                                                  \
	{                                                                                          \
		(uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE         \
	}

static ssize_t upload_cb(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length,
			 uint32_t *flags, nghttp2_data_source *src, void *u)
{
	struct pair *p = u;
	struct upload *up = src->ptr;
	size_t n = up->len - up->off;

	(void)s, (void)id;
	if (n > length)
		n = length;
	memcpy(buf, up->data + up->off, n);
	up->off += n;
	p->upload_off = up->off;
	if (up->off == up->len)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

/* A request with these headers (after the pseudo-headers) and, if @body,
 * that body.  Returns the stream ID. */
static int32_t request(struct pair *p, const char *method, const char *path,
		       const nghttp2_nv *extra, size_t n_extra, const uint8_t *body,
		       size_t body_len)
{
	nghttp2_nv nva[16] = { HDR(":method", method), HDR(":scheme", "https"),
			       HDR(":authority", "dns.example"), HDR(":path", path) };
	size_t n = 4;

	assert_true(n + n_extra <= 16);
	for (size_t i = 0; i < n_extra; i++)
		nva[n++] = extra[i];
	nghttp2_data_provider prd = { .read_callback = upload_cb };
	if (body) {
		struct upload *up = &p->uploads[p->n_uploads++ % 64];
		*up = (struct upload){ .data = body, .len = body_len };
		prd.source.ptr = up;
		p->upload_off = 0;
	}
	int32_t id = nghttp2_submit_request(p->client, NULL, nva, n, body ? &prd : NULL, NULL);
	assert_true(id > 0);
	return id;
}

/* A query for @name/A with ID @id (RFC 8484 says 0) and, if @pad, an OPT. */
static void make_query(struct msg *m, const char *name, unsigned id)
{
	put_header(m, id, 0x0100, 1, 0, 0, 0);
	put_name(m, name);
	put16(m, 1);
	put16(m, 1);
}

static void b64url(const uint8_t *in, size_t n, char *out)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t o = 0;
	unsigned acc = 0, bits = 0;

	for (size_t i = 0; i < n; i++) {
		acc = acc << 8 | in[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			out[o++] = a[(acc >> bits) & 63];
		}
	}
	if (bits)
		out[o++] = a[(acc << (6 - bits)) & 63];
	out[o] = 0;
}

static int32_t get_query(struct pair *p, const char *method, const struct msg *m)
{
	char path[8192] = "/dns-query?dns=";

	b64url(m->b, m->len, path + strlen(path));
	nghttp2_nv accept[] = { HDR("accept", "application/dns-message") };
	return request(p, method, path, accept, 1, NULL, 0);
}

static int32_t post_query(struct pair *p, const uint8_t *msg, size_t len)
{
	char clen[16];

	snprintf(clen, sizeof(clen), "%zu", len);
	nghttp2_nv h[] = { HDR("content-type", "application/dns-message"),
			   HDR("content-length", clen) };
	return request(p, "POST", "/dns-query", h, 2, msg, len);
}

static struct resp *done_resp(struct pair *p, int32_t id)
{
	struct resp *r = resp_of(p, id, false);

	assert_non_null(r);
	assert_true(r->ended || r->closed);
	return r;
}

/* -- tests ---------------------------------------------------------------------------- */

static void test_settings_announce_the_limits(void **state)
{
	struct pair *p = *state;

	pump(p);
	assert_int_equal(
	    nghttp2_session_get_remote_settings(p->client, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS),
	    100);
	assert_int_equal(
	    nghttp2_session_get_remote_settings(p->client, NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE),
	    DOH_SERVER_MAX_HEADERS);
	assert_int_equal(
	    nghttp2_session_get_remote_settings(p->client, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE),
	    65536);
	assert_int_equal(
	    nghttp2_session_get_remote_settings(p->client, NGHTTP2_SETTINGS_ENABLE_PUSH), 0);
	/* The connection window was raised so that several POSTs fit at once. */
	assert_int_equal(nghttp2_session_get_remote_window_size(p->client), DOH_SERVER_CONN_WINDOW);
	assert_true(doh_server_alive(p->server));
}

static void test_get_post_and_head_carry_the_query(void **state)
{
	struct pair *p = *state;
	struct msg m;

	make_query(&m, "www.example", 0);
	int32_t get = get_query(p, "GET", &m);
	int32_t post = post_query(p, m.b, m.len);
	int32_t head = get_query(p, "HEAD", &m);
	pump(p);
	assert_int_equal(p->n_ev, 3);
	enum doh_server_method want[] = { DOH_SERVER_GET, DOH_SERVER_POST, DOH_SERVER_HEAD };
	int32_t ids[] = { get, post, head };
	for (unsigned i = 0; i < 3; i++) {
		/* In the order they ended: the POST's body comes after the HEAD. */
		unsigned e = 0;
		while (e < 3 && p->ev[e].stream_id != ids[i])
			e++;
		assert_true(e < 3);
		assert_int_equal(p->ev[e].type, DOH_SERVER_QUERY);
		assert_int_equal(p->ev[e].method, want[i]);
		assert_int_equal(p->ev[e].len, m.len);
		assert_memory_equal(p->ev[e].msg, m.b, m.len);
	}
	/* Nothing answered yet: the streams wait. */
	assert_null(resp_of(p, get, false));

	/* An answer: one A record with TTL 300 and one with 60. */
	struct msg a;
	put_header(&a, 0, 0x8180, 1, 2, 0, 0);
	put_name(&a, "www.example");
	put16(&a, 1);
	put16(&a, 1);
	for (unsigned ttl = 300; ttl; ttl = ttl == 300 ? 60 : 0) {
		put_ptr(&a, 12);
		put_rr_fixed(&a, 1, 1, ttl, 4);
		put32(&a, 0xc0000201);
	}
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(doh_server_respond(p->server, ids[i], a.b, a.len), 0);
	assert_int_equal(doh_server_unsent(p->server), 2 * a.len); /* HEAD has no body */
	pump(p);
	assert_int_equal(doh_server_unsent(p->server), 0);
	char clen[16];
	snprintf(clen, sizeof(clen), "%zu", a.len);
	for (unsigned i = 0; i < 3; i++) {
		struct resp *r = done_resp(p, ids[i]);
		assert_int_equal(r->status, 200);
		assert_string_equal(r->content_type, "application/dns-message");
		assert_string_equal(r->cache_control, "max-age=60");
		assert_string_equal(r->content_length, clen);
		if (ids[i] == head) {
			assert_int_equal(r->body_len, 0);
		} else {
			assert_int_equal(r->body_len, a.len);
			assert_memory_equal(r->body, a.b, a.len);
		}
	}
	/* Answering again, or a stream that never was: no such stream. */
	assert_int_equal(doh_server_respond(p->server, get, a.b, a.len), DOH_SERVER_ENOENT);
	assert_int_equal(doh_server_respond(p->server, 99, a.b, a.len), DOH_SERVER_ENOENT);
	assert_int_equal(doh_server_take_rejected(p->server), 0);
}

static void test_the_dns_id_is_whatever_the_client_sent(void **state)
{
	struct pair *p = *state;
	struct msg m;

	p->answer = 1;
	make_query(&m, "a.example", 0x1234);
	int32_t id = post_query(p, m.b, m.len);
	pump(p);
	struct resp *r = done_resp(p, id);
	assert_int_equal(r->status, 200);
	assert_int_equal(wire_read16(r->body), 0x1234);
}

static void test_cache_control_follows_rfc_2308_and_errors_are_not_cached(void **state)
{
	struct pair *p = *state;
	struct msg m, nx, sf;

	make_query(&m, "nope.example", 0);
	int32_t a = post_query(p, m.b, m.len);
	int32_t b = post_query(p, m.b, m.len);
	pump(p);
	/* NXDOMAIN with an SOA of TTL 900 and MINIMUM 120: 120. */
	put_header(&nx, 0, 0x8183, 1, 0, 1, 0);
	put_name(&nx, "nope.example");
	put16(&nx, 1);
	put16(&nx, 1);
	put_name(&nx, "example");
	size_t rdlen_at = nx.len + 8;
	put_rr_fixed(&nx, 6, 1, 900, 0);
	size_t start = nx.len;
	put_name(&nx, "ns.example");
	put_name(&nx, "host.example");
	for (unsigned i = 0; i < 4; i++)
		put32(&nx, 1000);
	put32(&nx, 120);
	set16(&nx, rdlen_at, (unsigned)(nx.len - start));
	assert_int_equal(doh_server_respond(p->server, a, nx.b, nx.len), 0);
	/* SERVFAIL: max-age=0. */
	put_header(&sf, 0, 0x8182, 1, 0, 0, 0);
	put_name(&sf, "nope.example");
	put16(&sf, 1);
	put16(&sf, 1);
	assert_int_equal(doh_server_respond(p->server, b, sf.b, sf.len), 0);
	pump(p);
	assert_string_equal(done_resp(p, a)->cache_control, "max-age=120");
	assert_int_equal(done_resp(p, a)->status, 200);
	assert_string_equal(done_resp(p, b)->cache_control, "max-age=0");
	assert_int_equal(done_resp(p, b)->status, 200);
}

/* One request with @method and @path, and the status it got. */
static int status_of(struct pair *p, const char *method, const char *path, const nghttp2_nv *extra,
		     size_t n_extra, const uint8_t *body, size_t body_len)
{
	int32_t id = request(p, method, path, extra, n_extra, body, body_len);
	pump(p);
	return done_resp(p, id)->status;
}

static void test_status_codes(void **state)
{
	struct pair *p = *state;
	struct msg m, resp;
	char path[8192];
	nghttp2_nv ct[] = { HDR("content-type", "application/dns-message") };
	nghttp2_nv ct_params[] = { HDR("content-type", "Application/DNS-Message; charset=x") };
	nghttp2_nv ct_text[] = { HDR("content-type", "text/plain") };
	nghttp2_nv big_length[] = { HDR("content-type", "application/dns-message"),
				    HDR("content-length", "70000") };

	make_query(&m, "www.example", 0);
	char good[600] = "/dns-query?dns=";
	b64url(m.b, m.len, good + strlen(good));

	/* 404: another path, or the path as a prefix. */
	assert_int_equal(status_of(p, "GET", "/", NULL, 0, NULL, 0), 404);
	snprintf(path, sizeof(path), "/dns-query2?dns=%s", good + 15);
	assert_int_equal(status_of(p, "GET", path, NULL, 0, NULL, 0), 404);
	/* 405 for a method HTTP knows, with Allow; 501 for one it does not. */
	int32_t put = request(p, "PUT", "/dns-query", ct, 1, m.b, m.len);
	pump(p);
	assert_int_equal(done_resp(p, put)->status, 405);
	assert_string_equal(done_resp(p, put)->allow, "GET, POST, HEAD");
	assert_int_equal(status_of(p, "BREW", good, NULL, 0, NULL, 0), 501);
	/* 415: a POST that is not application/dns-message, or says nothing. */
	assert_int_equal(status_of(p, "POST", "/dns-query", ct_text, 1, m.b, m.len), 415);
	assert_int_equal(status_of(p, "POST", "/dns-query", NULL, 0, m.b, m.len), 415);
	/* ... while case and parameters do not matter. */
	p->answer = 1;
	assert_int_equal(status_of(p, "POST", "/dns-query", ct_params, 1, m.b, m.len), 200);
	/* 413: a body over 65,535 bytes, announced or not. */
	static uint8_t huge[70000];
	memcpy(huge, m.b, m.len);
	assert_int_equal(status_of(p, "POST", "/dns-query", big_length, 2, huge, sizeof(huge)),
			 413);
	assert_int_equal(status_of(p, "POST", "/dns-query", ct, 1, huge, sizeof(huge)), 413);
	/* ... and 65,535 is fine (it is a query with trailing junk: 400). */
	assert_int_equal(status_of(p, "POST", "/dns-query", ct, 1, huge, 65535), 400);
	/* 414: a :path over the limit. */
	memset(path, 'a', sizeof(path));
	memcpy(path, "/dns-query?x=", 13);
	path[DOH_SERVER_MAX_PATH + 1] = 0;
	assert_int_equal(status_of(p, "GET", path, NULL, 0, NULL, 0), 414);
	path[DOH_SERVER_MAX_PATH] = 0; /* at the limit: no dns= parameter, 400 */
	assert_int_equal(status_of(p, "GET", path, NULL, 0, NULL, 0), 400);
	/* 400: no dns=, an empty one, bad base64url, a message that is not a
	 * query (too short, or a response). */
	assert_int_equal(status_of(p, "GET", "/dns-query", NULL, 0, NULL, 0), 400);
	assert_int_equal(status_of(p, "GET", "/dns-query?dns=", NULL, 0, NULL, 0), 400);
	assert_int_equal(status_of(p, "GET", "/dns-query?dns=AAAA*AAA", NULL, 0, NULL, 0), 400);
	assert_int_equal(status_of(p, "GET", "/dns-query?dns=AAAAAAAA", NULL, 0, NULL, 0), 400);
	assert_int_equal(status_of(p, "POST", "/dns-query", ct, 1, NULL, 0), 400);
	resp = m;
	resp.b[2] |= 0x80;
	assert_int_equal(status_of(p, "POST", "/dns-query", ct, 1, resp.b, resp.len), 400);
	/* dns= among other parameters, and with padding: fine. */
	snprintf(path, sizeof(path), "/dns-query?ct=x&dns=%s&y", good + 15);
	assert_int_equal(status_of(p, "GET", path, NULL, 0, NULL, 0), 200);
	assert_int_equal(doh_server_take_rejected(p->server), 17);
	assert_true(doh_server_alive(p->server));
}

static void test_headers_over_the_limit_get_431(void **state)
{
	struct pair *p = *state;
	struct msg m;
	static char big[DOH_SERVER_MAX_HEADERS];
	char path[600] = "/dns-query?dns=";

	make_query(&m, "www.example", 0);
	b64url(m.b, m.len, path + strlen(path));
	memset(big, 'x', sizeof(big) - 1);
	nghttp2_nv h[] = { HDR("x-junk", big) };
	assert_int_equal(status_of(p, "GET", path, h, 1, NULL, 0), 431);
	/* Many small ones add up the same way. */
	big[4000] = 0;
	nghttp2_nv four[] = { HDR("x-a", big), HDR("x-b", big), HDR("x-c", big), HDR("x-d", big),
			      HDR("x-e", big) };
	assert_int_equal(status_of(p, "GET", path, four, 5, NULL, 0), 431);
	/* The connection goes on. */
	p->answer = 1;
	assert_int_equal(status_of(p, "GET", path, NULL, 0, NULL, 0), 200);
}

static void test_a_reset_before_the_query_is_taken_costs_nothing(void **state)
{
	struct pair *p = *state;
	struct msg m;
	const uint8_t *data;
	ssize_t n;

	make_query(&m, "www.example", 0);
	int32_t id = get_query(p, "GET", &m);
	nghttp2_submit_rst_stream(p->client, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
	/* HEADERS and RST_STREAM arrive in one read. */
	uint8_t buf[8192];
	size_t len = 0;
	while ((n = nghttp2_session_mem_send(p->client, &data)) > 0) {
		memcpy(buf + len, data, (size_t)n);
		len += (size_t)n;
	}
	assert_int_equal(doh_server_feed(p->server, buf, len), 0);
	struct doh_server_event ev;
	assert_false(doh_server_next_event(p->server, &ev));
	pump(p);
	assert_int_equal(p->n_ev, 0);
}

static void test_a_reset_after_the_query_was_taken_cancels_it(void **state)
{
	struct pair *p = *state;
	struct msg m;
	int token;

	make_query(&m, "www.example", 0);
	int32_t id = post_query(p, m.b, m.len);
	pump(p);
	assert_int_equal(p->n_ev, 1);
	assert_int_equal(doh_server_set_user(p->server, id, &token), 0);
	nghttp2_submit_rst_stream(p->client, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
	pump(p);
	assert_int_equal(p->n_ev, 2);
	assert_int_equal(p->ev[1].type, DOH_SERVER_CANCELLED);
	assert_int_equal(p->ev[1].stream_id, id);
	assert_ptr_equal(p->ev[1].user, &token);
	/* The answer that comes later has nowhere to go. */
	assert_int_equal(doh_server_respond(p->server, id, m.b, m.len), DOH_SERVER_ENOENT);
	assert_int_equal(doh_server_set_user(p->server, id, NULL), DOH_SERVER_ENOENT);
	assert_true(doh_server_alive(p->server));
}

static void test_a_client_reset_while_the_answer_is_held_frees_it(void **state)
{
	struct pair *p = *state;
	struct msg m;

	make_query(&m, "www.example", 0);
	/* The client's window for this stream is shut: the answer stays queued. */
	nghttp2_settings_entry iv[] = { { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 0 } };
	nghttp2_submit_settings(p->client, NGHTTP2_FLAG_NONE, iv, 1);
	int32_t id = post_query(p, m.b, m.len);
	pump(p);
	assert_int_equal(doh_server_respond(p->server, id, m.b, m.len), 0);
	pump(p);
	assert_int_equal(doh_server_unsent(p->server), m.len);
	nghttp2_submit_rst_stream(p->client, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
	pump(p);
	assert_int_equal(doh_server_unsent(p->server), 0);
	assert_int_equal(p->n_ev, 1); /* answered already: no CANCELLED */
}

static void test_exactly_100_streams_at_once(void **state)
{
	struct pair *p = *state;
	struct msg m;
	int32_t ids[101];

	/* All 101 before the server's SETTINGS reach the client. */
	make_query(&m, "www.example", 0);
	for (unsigned i = 0; i < 101; i++)
		ids[i] = get_query(p, "GET", &m);
	pump(p);
	assert_int_equal(p->n_ev, 100);
	struct resp *last = done_resp(p, ids[100]);
	assert_true(last->closed);
	assert_int_equal(last->close_code, NGHTTP2_REFUSED_STREAM);
	for (unsigned i = 0; i < 100; i++)
		assert_int_equal(doh_server_respond(p->server, ids[i], m.b, m.len), 0);
	pump(p);
	for (unsigned i = 0; i < 100; i++)
		assert_int_equal(done_resp(p, ids[i])->status, 200);
	/* Once they are answered, new streams open again. */
	p->answer = 1;
	int32_t more = get_query(p, "GET", &m);
	pump(p);
	assert_int_equal(done_resp(p, more)->status, 200);
}

static void test_rapid_reset_gets_goaway(void **state)
{
	struct pair *p = *state;
	struct msg m;
	unsigned i;

	struct timespec t0, t1;

	pump(p);
	make_query(&m, "www.example", 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (i = 0; i < 2000 && doh_server_alive(p->server); i++) {
		int32_t id = get_query(p, "GET", &m);
		pump(p); /* HEADERS out, and handed out as a query */
		nghttp2_submit_rst_stream(p->client, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
		pump(p);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_true(p->goaway);
	assert_int_not_equal(p->goaway_code, NGHTTP2_NO_ERROR);
	assert_false(doh_server_alive(p->server));
	/* Cut off after the burst, long before 2,000: nghttp2 gives the
	 * bucket DOH_SERVER_RESET_RATE more each second that passes (on a
	 * loaded machine, the loop can take more than one). */
	unsigned seconds = (unsigned)(t1.tv_sec - t0.tv_sec) + 1;
	assert_true(i <= DOH_SERVER_RESET_BURST + DOH_SERVER_RESET_RATE * seconds + 5);
	/* Every query handed out was cancelled: nothing is left for an answer. */
	unsigned queries = 0, cancelled = 0;
	for (unsigned k = 0; k < p->n_ev; k++)
		p->ev[k].type == DOH_SERVER_QUERY ? queries++ : cancelled++;
	assert_int_equal(queries, cancelled);
}

/* A frame header. */
static size_t frame_head(uint8_t *b, size_t len, uint8_t type, uint8_t flags, uint32_t stream)
{
	b[0] = (uint8_t)(len >> 16);
	b[1] = (uint8_t)(len >> 8);
	b[2] = (uint8_t)len;
	b[3] = type;
	b[4] = flags;
	b[5] = (uint8_t)(stream >> 24);
	b[6] = (uint8_t)(stream >> 16);
	b[7] = (uint8_t)(stream >> 8);
	b[8] = (uint8_t)stream;
	return 9;
}

/* The client preface and an empty SETTINGS, raw. */
static void raw_start(struct pair *p)
{
	static const char magic[] = NGHTTP2_CLIENT_MAGIC;
	uint8_t b[9];

	assert_int_equal(doh_server_feed(p->server, (const uint8_t *)magic, sizeof(magic) - 1), 0);
	frame_head(b, 0, NGHTTP2_SETTINGS, 0, 0);
	assert_int_equal(doh_server_feed(p->server, b, 9), 0);
}

/* Everything the server sent, parsed for a GOAWAY: its error code, or -1. */
static long goaway_in(const uint8_t *b, size_t len)
{
	for (size_t i = 0; i + 9 <= len;) {
		size_t flen = (size_t)b[i] << 16 | (size_t)b[i + 1] << 8 | b[i + 2];
		if (b[i + 3] == NGHTTP2_GOAWAY && i + 9 + 8 <= len)
			return (long)((uint32_t)b[i + 13] << 24 | (uint32_t)b[i + 14] << 16 |
				      (uint32_t)b[i + 15] << 8 | b[i + 16]);
		i += 9 + flen;
	}
	return -1;
}

static void drain_raw(struct pair *p, uint8_t *all, size_t *all_len, size_t cap)
{
	size_t len;
	const uint8_t *out;

	while ((out = doh_server_output(p->server, &len)), len > 0) {
		if (*all_len + len <= cap) {
			memcpy(all + *all_len, out, len);
			*all_len += len;
		}
	}
}

static void test_a_continuation_flood_ends_the_session(void **state)
{
	struct pair *p = *state;
	nghttp2_hd_deflater *deflater;
	uint8_t block[256], frame[64];
	static uint8_t out[65536];
	size_t out_len = 0;
	nghttp2_nv nva[] = { HDR(":method", "GET"), HDR(":scheme", "https"),
			     HDR(":authority", "dns.example"), HDR(":path", "/dns-query?dns=x"),
			     HDR("x-pad", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa") };

	raw_start(p);
	assert_int_equal(nghttp2_hd_deflate_new(&deflater, 4096), 0);
	ssize_t blen = nghttp2_hd_deflate_hd(deflater, block, sizeof(block), nva, 5);
	nghttp2_hd_deflate_del(deflater);
	assert_true(blen > 20);
	/* HEADERS with one byte of the block, then one CONTINUATION per byte. */
	size_t n = frame_head(frame, 1, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_STREAM, 1);
	frame[n++] = block[0];
	int rc = doh_server_feed(p->server, frame, n);
	for (ssize_t i = 1; i < blen - 1 && rc == 0; i++) {
		n = frame_head(frame, 1, NGHTTP2_CONTINUATION, 0, 1);
		frame[n++] = block[i];
		rc = doh_server_feed(p->server, frame, n);
	}
	assert_int_equal(rc, DOH_SERVER_EPROTO);
	drain_raw(p, out, &out_len, sizeof(out));
	assert_true(goaway_in(out, out_len) > 0);
	assert_false(doh_server_alive(p->server));
	assert_int_equal(doh_server_feed(p->server, frame, n), DOH_SERVER_ECLOSED);
}

static void test_a_header_block_in_4_continuations_and_no_more(void **state)
{
	struct pair *p = *state;
	nghttp2_hd_deflater *deflater;
	uint8_t block[256], frame[256];
	static uint8_t out[65536];
	size_t out_len = 0;
	struct msg m;
	char path[600] = "/dns-query?dns=";

	make_query(&m, "www.example", 0);
	b64url(m.b, m.len, path + strlen(path));
	nghttp2_nv nva[] = { HDR(":method", "GET"), HDR(":scheme", "https"),
			     HDR(":authority", "dns.example"), HDR(":path", path) };
	raw_start(p);
	assert_int_equal(nghttp2_hd_deflate_new(&deflater, 4096), 0);
	ssize_t blen = nghttp2_hd_deflate_hd(deflater, block, sizeof(block), nva, 4);
	nghttp2_hd_deflate_del(deflater);
	/* HEADERS and DOH_SERVER_MAX_CONTINUATIONS CONTINUATIONs. */
	size_t part = (size_t)blen / (DOH_SERVER_MAX_CONTINUATIONS + 1) + 1, off = 0;
	for (unsigned i = 0; off < (size_t)blen; i++) {
		size_t len = (size_t)blen - off < part ? (size_t)blen - off : part;
		bool last = off + len == (size_t)blen;
		size_t n = frame_head(frame, len, i ? NGHTTP2_CONTINUATION : NGHTTP2_HEADERS,
				      (uint8_t)((i ? 0 : NGHTTP2_FLAG_END_STREAM) |
						(last ? NGHTTP2_FLAG_END_HEADERS : 0)),
				      1);
		memcpy(frame + n, block + off, len);
		assert_int_equal(doh_server_feed(p->server, frame, n + len), 0);
		off += len;
	}
	handle_events(p);
	assert_int_equal(p->n_ev, 1);
	drain_raw(p, out, &out_len, sizeof(out));
	assert_int_equal(goaway_in(out, out_len), -1);

	/* One more CONTINUATION than that ends the session. */
	part = (size_t)blen / (DOH_SERVER_MAX_CONTINUATIONS + 2) + 1;
	off = 0;
	int rc = 0;
	for (unsigned i = 0; off < (size_t)blen && rc == 0; i++) {
		size_t len = (size_t)blen - off < part ? (size_t)blen - off : part;
		bool last = off + len == (size_t)blen;
		assert_true(i <= DOH_SERVER_MAX_CONTINUATIONS + 1);
		size_t n = frame_head(frame, len, i ? NGHTTP2_CONTINUATION : NGHTTP2_HEADERS,
				      (uint8_t)((i ? 0 : NGHTTP2_FLAG_END_STREAM) |
						(last ? NGHTTP2_FLAG_END_HEADERS : 0)),
				      3);
		memcpy(frame + n, block + off, len);
		rc = doh_server_feed(p->server, frame, n + len);
		off += len;
	}
	assert_int_equal(rc, DOH_SERVER_EPROTO);
}

static void test_a_settings_flood_ends_the_session(void **state)
{
	struct pair *p = *state;
	static uint8_t out[1 << 20];
	size_t out_len = 0;
	uint8_t frame[9];
	int rc = 0;

	raw_start(p);
	/* SETTINGS after SETTINGS, never reading the acknowledgements. */
	frame_head(frame, 0, NGHTTP2_SETTINGS, 0, 0);
	for (unsigned i = 0; i < 10000 && rc == 0; i++)
		rc = doh_server_feed(p->server, frame, 9);
	assert_int_equal(rc, DOH_SERVER_EPROTO);
	drain_raw(p, out, &out_len, sizeof(out));
	assert_false(doh_server_alive(p->server));
}

static void test_a_settings_frame_with_too_many_entries_ends_the_session(void **state)
{
	struct pair *p = *state;
	static uint8_t out[65536];
	size_t out_len = 0;
	uint8_t frame[9 + 6 * 40];

	raw_start(p);
	size_t n = frame_head(frame, 6 * 40, NGHTTP2_SETTINGS, 0, 0);
	for (unsigned i = 0; i < 40; i++) {
		frame[n++] = 0;
		frame[n++] = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS;
		frame[n++] = 0;
		frame[n++] = 0;
		frame[n++] = 0;
		frame[n++] = 10;
	}
	(void)doh_server_feed(p->server, frame, n);
	drain_raw(p, out, &out_len, sizeof(out));
	assert_true(goaway_in(out, out_len) > 0);
	assert_false(doh_server_alive(p->server));
}

static void test_request_bodies_give_their_window_back(void **state)
{
	struct pair *p = *state;
	static uint8_t body[60000];
	struct msg m;

	/* 20 POSTs of 60,000 bytes: far more than the connection window, which
	 * must come back as each body is used up. */
	make_query(&m, "www.example", 0);
	memcpy(body, m.b, m.len);
	nghttp2_nv ct[] = { HDR("content-type", "application/dns-message") };
	for (unsigned i = 0; i < 20; i++)
		assert_int_equal(status_of(p, "POST", "/dns-query", ct, 1, body, sizeof(body)),
				 400); /* trailing bytes: not a query */
	/* A real one after all that. */
	p->answer = 1;
	assert_int_equal(status_of(p, "POST", "/dns-query", ct, 1, m.b, m.len), 200);
}

static void test_an_early_413_resets_the_upload(void **state)
{
	struct pair *p = *state;
	static uint8_t huge[200000];
	nghttp2_nv h[] = { HDR("content-type", "application/dns-message") };

	/* Without content-length the server finds out as the body comes; it
	 * answers 413 and resets the stream with NO_ERROR so the client stops. */
	int32_t id = request(p, "POST", "/dns-query", h, 1, huge, sizeof(huge));
	pump(p);
	struct resp *r = done_resp(p, id);
	assert_int_equal(r->status, 413);
	assert_true(r->closed);
	assert_true(p->upload_off < sizeof(huge));
	assert_true(doh_server_alive(p->server));
}

static void test_http1_gets_505(void **state)
{
	struct pair *p = *state;
	static const char req[] = "GET /dns-query?dns=AAAB HTTP/1.1\r\nHost: x\r\n\r\n";
	size_t len;

	assert_int_equal(doh_server_feed(p->server, (const uint8_t *)req, sizeof(req) - 1),
			 DOH_SERVER_EPROTO);
	assert_true(doh_server_alive(p->server)); /* until the refusal is taken */
	const uint8_t *out = doh_server_output(p->server, &len);
	assert_true(len > 30);
	assert_memory_equal(out, "HTTP/1.1 505 ", 13);
	doh_server_output(p->server, &len);
	assert_int_equal(len, 0);
	assert_false(doh_server_alive(p->server));
}

static void test_garbage_instead_of_the_preface_ends_the_session(void **state)
{
	struct pair *p = *state;
	static const uint8_t junk[] = { 0x16, 0x03, 0x01, 0x00, 0x20 };
	size_t len;

	assert_int_equal(doh_server_feed(p->server, junk, sizeof(junk)), DOH_SERVER_EPROTO);
	do
		doh_server_output(p->server, &len);
	while (len);
	assert_false(doh_server_alive(p->server));
}

static void test_shutdown_answers_open_streams_then_ends(void **state)
{
	struct pair *p = *state;
	struct msg m;

	make_query(&m, "www.example", 0);
	int32_t id = get_query(p, "GET", &m);
	pump(p);
	doh_server_shutdown(p->server);
	pump(p);
	assert_true(p->goaway);
	assert_int_equal(p->goaway_code, NGHTTP2_NO_ERROR);
	assert_true(doh_server_alive(p->server)); /* one stream still open */
	assert_int_equal(doh_server_respond(p->server, id, m.b, m.len), 0);
	pump(p);
	assert_int_equal(done_resp(p, id)->status, 200);
	assert_false(doh_server_alive(p->server));
}

static void test_the_clients_goaway_ends_the_session_once_answered(void **state)
{
	struct pair *p = *state;
	struct msg m;

	make_query(&m, "www.example", 0);
	int32_t id = get_query(p, "GET", &m);
	pump(p);
	nghttp2_submit_goaway(p->client, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
	pump(p);
	assert_true(doh_server_alive(p->server));
	assert_int_equal(doh_server_respond(p->server, id, m.b, m.len), 0);
	pump(p);
	assert_false(doh_server_alive(p->server));
}

static void test_queries_at_another_path(void **state)
{
	struct pair *p = pair_new("/resolve");
	struct msg m;
	char path[600] = "/resolve?dns=";

	p->answer = 1;
	make_query(&m, "www.example", 0);
	b64url(m.b, m.len, path + strlen(path));
	assert_int_equal(status_of(p, "GET", path, NULL, 0, NULL, 0), 200);
	assert_int_equal(get_query(p, "GET", &m) > 0, 1);
	pump(p);
	assert_int_equal(done_resp(p, 3)->status, 404); /* /dns-query is not served */
	pair_free(p);
	(void)state;
}

static void test_base64url(void **state)
{
	uint8_t out[64];

	(void)state;
	assert_int_equal(doh_server_base64url_decode("", 0, out, sizeof(out)), 0);
	assert_int_equal(doh_server_base64url_decode("AA", 2, out, sizeof(out)), 1);
	assert_int_equal(out[0], 0);
	assert_int_equal(doh_server_base64url_decode("_-8", 3, out, sizeof(out)), 2);
	assert_int_equal(out[0], 0xff);
	assert_int_equal(out[1], 0xef);
	/* RFC 4648 test vectors, base64url form. */
	assert_int_equal(doh_server_base64url_decode("Zm9vYmFy", 8, out, sizeof(out)), 6);
	assert_memory_equal(out, "foobar", 6);
	assert_int_equal(doh_server_base64url_decode("Zm9vYg", 6, out, sizeof(out)), 4);
	assert_memory_equal(out, "foob", 4);
	assert_int_equal(doh_server_base64url_decode("Zm9vYg==", 8, out, sizeof(out)), 4);
	/* Not base64url: standard base64's + and /, a length of 4n+1, stray
	 * bits, '=' inside, too long for the buffer. */
	assert_int_equal(doh_server_base64url_decode("ab+/", 4, out, sizeof(out)), -1);
	assert_int_equal(doh_server_base64url_decode("abcde", 5, out, sizeof(out)), -1);
	assert_int_equal(doh_server_base64url_decode("AB", 2, out, sizeof(out)), -1);
	assert_int_equal(doh_server_base64url_decode("A=AA", 4, out, sizeof(out)), -1);
	assert_int_equal(doh_server_base64url_decode("Zm9vYmFy", 8, out, 5), -1);
	/* Round trip of every length up to 40. */
	uint8_t in[40];
	char text[64];
	for (size_t n = 0; n < sizeof(in); n++) {
		in[n] = (uint8_t)(n * 37 + 11);
		b64url(in, n + 1, text);
		assert_int_equal(doh_server_base64url_decode(text, strlen(text), out, n + 1),
				 (long)(n + 1));
		assert_memory_equal(out, in, n + 1);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_settings_announce_the_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_get_post_and_head_carry_the_query, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_the_dns_id_is_whatever_the_client_sent, setup,
						teardown),
		cmocka_unit_test_setup_teardown(
		    test_cache_control_follows_rfc_2308_and_errors_are_not_cached, setup, teardown),
		cmocka_unit_test_setup_teardown(test_status_codes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_headers_over_the_limit_get_431, setup,
						teardown),
		cmocka_unit_test_setup_teardown(
		    test_a_reset_before_the_query_is_taken_costs_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_a_reset_after_the_query_was_taken_cancels_it,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_a_client_reset_while_the_answer_is_held_frees_it, setup, teardown),
		cmocka_unit_test_setup_teardown(test_exactly_100_streams_at_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rapid_reset_gets_goaway, setup, teardown),
		cmocka_unit_test_setup_teardown(test_a_continuation_flood_ends_the_session, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_a_header_block_in_4_continuations_and_no_more,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_a_settings_flood_ends_the_session, setup,
						teardown),
		cmocka_unit_test_setup_teardown(
		    test_a_settings_frame_with_too_many_entries_ends_the_session, setup, teardown),
		cmocka_unit_test_setup_teardown(test_request_bodies_give_their_window_back, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_an_early_413_resets_the_upload, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_http1_gets_505, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_garbage_instead_of_the_preface_ends_the_session, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shutdown_answers_open_streams_then_ends, setup,
						teardown),
		cmocka_unit_test_setup_teardown(
		    test_the_clients_goaway_ends_the_session_once_answered, setup, teardown),
		cmocka_unit_test(test_queries_at_another_path),
		cmocka_unit_test(test_base64url),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
