/*
 * Fuzz target for lib/doh_server, the DoH request path: the URI and its
 * dns= parameter (base64url), the headers, the method, the body, and the
 * HTTP/2 framing under them.
 *
 * Input layout:
 *   byte 0      bit 0: raw mode: the client preface, then the rest of the
 *               input as it is, fed in chunks whose sizes come from byte 1
 *               (frames, HPACK and all: nghttp2 and the callbacks above it)
 *               bit 1: answer the queries handed out (else they wait, and
 *               some streams are reset by the client instead: structured
 *               mode only)
 *   structured mode, after byte 0, requests until the input ends, each:
 *     1 byte    method: 0 GET, 1 POST, 2 HEAD, 3 PUT, else "M<byte>"
 *     1 byte    bit 0: send a content-type of the following bytes;
 *               bit 1: END_STREAM on HEADERS even with a body;
 *               bit 2: reset the stream after sending it;
 *               bit 3: a content-length header of the body's length (or,
 *               with bit 4, 70000)
 *     2 bytes   path length (at most 8192), then the path
 *     1 byte    content-type length, then the content type
 *     2 bytes   body length, then the body
 *   Each request goes through an nghttp2 client session in memory.
 *
 * Checked: every query handed out is a DNS query (a header that parses,
 * QR=0); a CANCELLED event only names a stream handed out and not yet
 * answered, with what was attached to it; a stream waiting for its answer
 * can be answered; in structured mode every answer submitted leaves
 * (doh_server_unsent() returns to 0) unless the session ended; and
 * base64url decoding of the whole input is canonical: what decodes
 * re-encodes to the same text.
 */
#include "tests/fuzz/fuzz.h"

#include "lib/doh_server.h"
#include "lib/wire.h"

#include <nghttp2/nghttp2.h>
#include <stdbool.h>

enum { MAX_STREAMS = 64 };

struct run {
	struct doh_server *server;
	nghttp2_session *client;
	int32_t handed[MAX_STREAMS]; /* queries handed out and not answered or cancelled */
	unsigned n_handed;
	bool answer;
	struct body {
		const uint8_t *data;
		size_t len, off;
	} bodies[MAX_STREAMS];
	unsigned n_bodies;
};

static void handed_add(struct run *r, int32_t id)
{
	if (r->n_handed < MAX_STREAMS)
		r->handed[r->n_handed++] = id;
}

static bool handed_take(struct run *r, int32_t id)
{
	for (unsigned i = 0; i < r->n_handed; i++) {
		if (r->handed[i] == id) {
			r->handed[i] = r->handed[--r->n_handed];
			return true;
		}
	}
	return false;
}

static void events(struct run *r)
{
	struct doh_server_event ev;

	while (doh_server_next_event(r->server, &ev)) {
		if (ev.type == DOH_SERVER_CANCELLED) {
			CHECK(ev.user == r);
			CHECK(handed_take(r, ev.stream_id));
			continue;
		}
		struct wire_info info;
		CHECK(ev.len >= WIRE_HEADER_LEN);
		CHECK(wire_parse(ev.msg, ev.len, &info) == 0);
		CHECK(!(info.flags & WIRE_FLAG_QR));
		CHECK(doh_server_set_user(r->server, ev.stream_id, r) == 0);
		if (r->answer) {
			uint8_t a[65535];
			memcpy(a, ev.msg, ev.len);
			a[2] |= 0x80;
			CHECK(doh_server_respond(r->server, ev.stream_id, a, ev.len) == 0);
		} else {
			handed_add(r, ev.stream_id);
		}
	}
}

static void to_client(struct run *r)
{
	size_t len;
	const uint8_t *out;

	while ((out = doh_server_output(r->server, &len)), len > 0)
		if (r->client)
			nghttp2_session_mem_recv(r->client, out, len);
}

static void pump(struct run *r)
{
	for (int round = 0; round < 64; round++) {
		const uint8_t *data;
		ssize_t n;
		bool moved = false;
		while (r->client && (n = nghttp2_session_mem_send(r->client, &data)) > 0) {
			(void)doh_server_feed(r->server, data, (size_t)n);
			events(r);
			moved = true;
		}
		size_t before = doh_server_unsent(r->server);
		to_client(r);
		if (!moved && doh_server_unsent(r->server) == before)
			return;
	}
}

static ssize_t body_cb(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
		       nghttp2_data_source *src, void *u)
{
	struct body *b = src->ptr;
	size_t n = b->len - b->off;

	(void)s, (void)id, (void)u;
	if (n > length)
		n = length;
	memcpy(buf, b->data + b->off, n);
	b->off += n;
	if (b->off == b->len)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

static bool take(const uint8_t **p, size_t *n, size_t want, const uint8_t **out)
{
	if (*n < want)
		return false;
	*out = *p;
	*p += want;
	*n -= want;
	return true;
}

/* One request from the input; false when the input is used up. */
static bool request(struct run *r, const uint8_t **p, size_t *n)
{
	static const char *const methods[] = { "GET", "POST", "HEAD", "PUT" };
	const uint8_t *hdr, *path, *ct, *body, *len;
	char method[8], clen[16];

	if (!take(p, n, 2, &hdr) || !take(p, n, 2, &len))
		return false;
	size_t path_len = (size_t)(len[0] << 8 | len[1]) % 8193;
	if (!take(p, n, path_len, &path) || !take(p, n, 1, &len) || !take(p, n, len[0], &ct))
		return false;
	size_t ct_len = len[0];
	if (!take(p, n, 2, &len))
		return false;
	size_t body_len = (size_t)(len[0] << 8 | len[1]);
	if (!take(p, n, body_len, &body))
		return false;
	if (hdr[0] < 4)
		snprintf(method, sizeof(method), "%s", methods[hdr[0]]);
	else
		snprintf(method, sizeof(method), "M%u", hdr[0]);
	snprintf(clen, sizeof(clen), "%zu", hdr[1] & 16 ? (size_t)70000 : body_len);
	nghttp2_nv nva[6] = {
		{ (uint8_t *)":method", (uint8_t *)method, 7, strlen(method), 0 },
		{ (uint8_t *)":scheme", (uint8_t *)"https", 7, 5, 0 },
		{ (uint8_t *)":authority", (uint8_t *)"dns.example", 10, 11, 0 },
		{ (uint8_t *)":path", (uint8_t *)path, 5, path_len, 0 },
	};
	size_t nv = 4;
	if (hdr[1] & 1)
		nva[nv++] = (nghttp2_nv){ (uint8_t *)"content-type", (uint8_t *)ct, 12, ct_len, 0 };
	if (hdr[1] & 8)
		nva[nv++] = (nghttp2_nv){ (uint8_t *)"content-length", (uint8_t *)clen, 14,
					  strlen(clen), 0 };
	nghttp2_data_provider prd = { .read_callback = body_cb };
	bool with_body = body_len > 0 && !(hdr[1] & 2) && r->n_bodies < MAX_STREAMS;
	if (with_body) {
		struct body *b = &r->bodies[r->n_bodies++];
		*b = (struct body){ .data = body, .len = body_len };
		prd.source.ptr = b;
	}
	int32_t id =
	    nghttp2_submit_request(r->client, NULL, nva, nv, with_body ? &prd : NULL, NULL);
	if (id < 0)
		return true; /* nghttp2 refuses it (a header it will not send): next */
	pump(r);
	if ((hdr[1] & 4) && !r->answer)
		nghttp2_submit_rst_stream(r->client, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
	pump(r);
	return true;
}

static void structured(struct run *r, const uint8_t *p, size_t n)
{
	nghttp2_session_callbacks *cbs;
	nghttp2_option *opt;

	CHECK(nghttp2_session_callbacks_new(&cbs) == 0);
	CHECK(nghttp2_option_new(&opt) == 0);
	nghttp2_option_set_peer_max_concurrent_streams(opt, 1000);
	CHECK(nghttp2_session_client_new2(&r->client, cbs, r, opt) == 0);
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cbs);
	nghttp2_submit_settings(r->client, NGHTTP2_FLAG_NONE, NULL, 0);
	while (request(r, &p, &n) && doh_server_alive(r->server))
		;
	/* Answer what waits; every answer must leave. */
	events(r);
	for (unsigned i = 0; i < r->n_handed; i++)
		CHECK(doh_server_respond_status(r->server, r->handed[i], 503) == 0 ||
		      !doh_server_alive(r->server));
	r->n_handed = 0;
	pump(r);
	CHECK(doh_server_unsent(r->server) == 0 || !doh_server_alive(r->server));
	nghttp2_session_del(r->client);
	r->client = NULL;
}

static void raw(struct run *r, const uint8_t *p, size_t n)
{
	static const char magic[] = NGHTTP2_CLIENT_MAGIC;
	size_t chunk = n ? (size_t)p[0] % 64 + 1 : 1;

	if (n) {
		p++;
		n--;
	}
	(void)doh_server_feed(r->server, (const uint8_t *)magic, sizeof(magic) - 1);
	while (n > 0 && doh_server_alive(r->server)) {
		size_t k = n < chunk ? n : chunk;
		int rc = doh_server_feed(r->server, p, k);
		events(r);
		to_client(r);
		if (rc < 0)
			break;
		p += k;
		n -= k;
	}
	to_client(r);
}

/* base64url, canonical: whatever decodes encodes back to the same text
 * (up to the '=' the decoder tolerates). */
static void base64url(const uint8_t *data, size_t size)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	uint8_t out[4096];
	char again[5600];

	if (size > 5400)
		size = 5400;
	long n = doh_server_base64url_decode((const char *)data, size, out, sizeof(out));
	if (n < 0)
		return;
	size_t o = 0, text = size;
	unsigned acc = 0, bits = 0;
	for (long i = 0; i < n; i++) {
		acc = (acc << 8 | out[i]) & 0xffff;
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			again[o++] = a[(acc >> bits) & 63];
		}
	}
	if (bits)
		again[o++] = a[(acc << (6 - bits)) & 63];
	while (text > 0 && data[text - 1] == '=' && text > o)
		text--;
	CHECK(o == text && memcmp(again, data, o) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run r = { 0 };

	base64url(data, size);
	if (size < 1)
		return 0;
	r.server = doh_server_new("/dns-query");
	CHECK(r.server);
	r.answer = data[0] & 2;
	if (data[0] & 1)
		raw(&r, data + 1, size - 1);
	else
		structured(&r, data + 1, size - 1);
	doh_server_free(r.server);
	return 0;
}
