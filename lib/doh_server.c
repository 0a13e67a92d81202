/*
 * The DoH server session.  nghttp2 parses and frames; this file decides
 * what a request is worth: a record per stream collects its method, path,
 * content type and body within the limits, and when the request ends it is
 * either answered here with an HTTP error or queued as a DNS query for the
 * caller.  Request bodies are given back to flow control only once they
 * are used up (no automatic WINDOW_UPDATE), so the bytes buffered per
 * connection never exceed its receive window, whatever the client sends.
 */
#include "lib/doh_server.h"

#include "lib/wire.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum {
	OUT_SOFT = 65536,      /* doh_server_output() stops collecting past this */
	MAX_SETTINGS = 16,     /* entries in one SETTINGS frame */
	MAX_OUTBOUND_ACK = 64, /* SETTINGS and PING acks queued and not yet sent */
	HEADER_TABLE = 4096,   /* HPACK dynamic tables, both ways */
	MAX_FRAME = 16384,     /* SETTINGS_MAX_FRAME_SIZE: the minimum, RFC 9113 §6.5.2 */
};

static const char dns_message[] = "application/dns-message";

enum stream_state {
	ST_HEADERS,    /* the request's header block is arriving */
	ST_BODY,       /* headers done: DATA or the end of the stream may come */
	ST_READY,      /* a DNS query, waiting in the event queue */
	ST_DISPATCHED, /* handed out; no answer yet */
	ST_RESPONDING, /* a response submitted */
	ST_CANCELLED,  /* handed out, then closed: waiting in the event queue */
};

/* One request and its response.  It belongs to the session: linked in
 * s->streams from HEADERS until nghttp2 closes the stream (or, for a query
 * handed out, until its CANCELLED event is taken). */
struct stream {
	int32_t id;
	enum stream_state state;
	enum doh_server_method method;
	unsigned method_status; /* 405 or 501 for a method we do not serve; 0 */
	unsigned error;		/* an HTTP error decided while receiving; 0: none */
	bool path_too_long;
	bool content_type_ok;
	bool remote_ended;    /* END_STREAM received */
	bool early;	      /* answered before the request ended: reset it once sent */
	char *path;	      /* owned; NULL until :path */
	size_t header_bytes;  /* RFC 9113 §6.5.2 accounting */
	size_t declared_body; /* content-length, if any */
	uint8_t *buf;	      /* owned: the request body, or the decoded dns= query */
	size_t len, cap;
	uint8_t *resp; /* owned: the response body (the request stays intact: the
			* caller may still read it while it answers) */
	size_t resp_len;
	size_t sent;	   /* response bytes handed to nghttp2 */
	size_t unconsumed; /* DATA bytes not yet given back to flow control */
	void *user;
	struct stream *ev_next;	    /* in the event queue */
	struct stream *prev, *next; /* in s->streams */
};

struct doh_server {
	nghttp2_session *session;
	char path[DOH_SERVER_MAX_PATH_OPTION + 1];
	size_t path_len;
	struct stream *streams;
	struct stream *ev_head, *ev_tail;
	uint8_t *out; /* doh_server_output()'s buffer */
	size_t out_len, out_cap;
	size_t unsent; /* response body bytes not yet read by nghttp2 */
	unsigned rejected;
	bool failed;	    /* the session is over; only output remains */
	bool response_sent; /* the last frame serialized ended a response */
	/* HTTP/1.x instead of the preface: the 505, and nothing else, is sent */
	enum { HTTP1_NO, HTTP1_REFUSE, HTTP1_REFUSED } http1;
};

/* -- streams --------------------------------------------------------------------- */

static struct stream *stream_of(struct doh_server *s, int32_t id)
{
	return nghttp2_session_get_stream_user_data(s->session, id);
}

static void stream_destroy(struct stream *st)
{
	free(st->path);
	free(st->buf);
	free(st->resp);
	free(st);
}

static void stream_free(struct doh_server *s, struct stream *st)
{
	if (st->prev)
		st->prev->next = st->next;
	else
		s->streams = st->next;
	if (st->next)
		st->next->prev = st->prev;
	stream_destroy(st);
}

static void enqueue(struct doh_server *s, struct stream *st)
{
	st->ev_next = NULL;
	if (s->ev_tail)
		s->ev_tail->ev_next = st;
	else
		s->ev_head = st;
	s->ev_tail = st;
}

static void dequeue(struct doh_server *s, struct stream *st)
{
	struct stream *prev = NULL;

	for (struct stream *p = s->ev_head; p; prev = p, p = p->ev_next) {
		if (p != st)
			continue;
		if (prev)
			prev->ev_next = p->ev_next;
		else
			s->ev_head = p->ev_next;
		if (s->ev_tail == p)
			s->ev_tail = prev;
		return;
	}
}

/* Room for @need bytes in @st's buffer. */
static bool reserve(struct stream *st, size_t need)
{
	if (need <= st->cap)
		return true;
	size_t cap = st->cap ? st->cap : 512;
	while (cap < need)
		cap *= 2;
	uint8_t *buf = realloc(st->buf, cap);
	if (!buf)
		return false;
	st->buf = buf;
	st->cap = cap;
	return true;
}

/* Give @n received bytes of @st back to flow control. */
static void consume(struct doh_server *s, struct stream *st, size_t n)
{
	if (n)
		nghttp2_session_consume(s->session, st->id, n);
}

/* -- responses ------------------------------------------------------------------- */

static ssize_t read_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
			 uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
	struct doh_server *s = user_data;
	struct stream *st = source->ptr;
	size_t n = st->resp_len - st->sent;

	(void)session, (void)stream_id;
	if (n > length)
		n = length;
	memcpy(buf, st->resp + st->sent, n);
	st->sent += n;
	s->unsent -= n;
	if (st->sent == st->resp_len)
		*data_flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

#define NV(name, value)                                                                            \
	{                                                                                          \
		(uint8_t *)(name), (uint8_t *)(value), sizeof(name) - 1, strlen(value),            \
		    NGHTTP2_NV_FLAG_NONE                                                           \
	}

/* An HTTP error for @st, without a body.  Before the request ended, the
 * stream is reset (NO_ERROR) once the response is out, so that the client
 * stops sending (RFC 9113 §8.1). */
static int respond_status(struct doh_server *s, struct stream *st, unsigned status)
{
	char code[8];

	snprintf(code, sizeof(code), "%u", status);
	nghttp2_nv nva[] = { NV(":status", code), NV("content-length", "0"),
			     NV("allow", "GET, POST, HEAD") };
	size_t n = status == 405 ? 3 : 2;

	st->state = ST_RESPONDING;
	st->early = !st->remote_ended;
	s->rejected++;
	return nghttp2_submit_response(s->session, st->id, nva, n, NULL) == 0 ? 0
									      : DOH_SERVER_ENOMEM;
}

/* RFC 8484 §5.1: fresh no longer than the smallest TTL (RFC 2308 for a
 * negative answer); 0 for what must not be cached at all. */
static uint32_t max_age(const uint8_t *msg, size_t len)
{
	struct wire_info info;
	uint32_t ttl = 0;

	if (wire_parse(msg, len, &info) != 0 || wire_cache_ttl(msg, len, &info, &ttl) != 0)
		return 0;
	return ttl;
}

/* -- requests -------------------------------------------------------------------- */

/* Request methods HTTP defines (RFC 9110 §9) that a DNS API does not serve:
 * 405 with Allow; any other token is not implemented at all (501). */
static unsigned method_status(const uint8_t *v, size_t n, enum doh_server_method *m)
{
	static const char *const known[] = {
		"PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"
	};

	if (n == 3 && memcmp(v, "GET", 3) == 0) {
		*m = DOH_SERVER_GET;
		return 0;
	}
	if (n == 4 && memcmp(v, "POST", 4) == 0) {
		*m = DOH_SERVER_POST;
		return 0;
	}
	if (n == 4 && memcmp(v, "HEAD", 4) == 0) {
		*m = DOH_SERVER_HEAD;
		return 0;
	}
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (n == strlen(known[i]) && memcmp(v, known[i], n) == 0)
			return 405;
	return 501;
}

/* "application/dns-message", any case, perhaps with parameters. */
static bool is_dns_message(const uint8_t *v, size_t n)
{
	size_t want = sizeof(dns_message) - 1;

	if (n < want || strncasecmp((const char *)v, dns_message, want) != 0)
		return false;
	for (size_t i = want; i < n; i++) {
		if (v[i] == ';')
			return true;
		if (v[i] != ' ' && v[i] != '\t')
			return false;
	}
	return true;
}

static bool parse_length(const uint8_t *v, size_t n, size_t *out)
{
	size_t x = 0;

	if (n == 0 || n > 12)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return false;
		x = x * 10 + (size_t)(v[i] - '0');
	}
	*out = x;
	return true;
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	struct doh_server *s = user_data;

	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	struct stream *st = calloc(1, sizeof(*st));
	if (!st)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	st->id = frame->hd.stream_id;
	st->next = s->streams;
	if (s->streams)
		s->streams->prev = st;
	s->streams = st;
	nghttp2_session_set_stream_user_data(session, st->id, st);
	return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
		     void *user_data)
{
	struct doh_server *s = user_data;
	struct stream *st = stream_of(s, frame->hd.stream_id);

	(void)session, (void)flags;
	if (!st)
		return 0;
	/* Headers past the limit are still decoded (HPACK state is shared by
	 * the connection), but kept nowhere. */
	st->header_bytes += namelen + valuelen + 32;
	if (st->header_bytes > DOH_SERVER_MAX_HEADERS || st->state != ST_HEADERS)
		return 0;
	if (namelen == 7 && memcmp(name, ":method", 7) == 0) {
		st->method_status = method_status(value, valuelen, &st->method);
	} else if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
		if (valuelen > DOH_SERVER_MAX_PATH) {
			st->path_too_long = true;
			return 0;
		}
		free(st->path);
		st->path = malloc(valuelen + 1);
		if (!st->path)
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		memcpy(st->path, value, valuelen);
		st->path[valuelen] = 0;
	} else if (namelen == 12 && memcmp(name, "content-type", 12) == 0) {
		st->content_type_ok = is_dns_message(value, valuelen);
	} else if (namelen == 14 && memcmp(name, "content-length", 14) == 0) {
		if (!parse_length(value, valuelen, &st->declared_body))
			st->declared_body = DOH_SERVER_MAX_BODY + 1;
	}
	return 0;
}

/* Is @path (up to '?') the path we serve? */
static bool our_path(const struct doh_server *s, const char *path)
{
	size_t n = strcspn(path, "?");

	return n == s->path_len && memcmp(path, s->path, n) == 0;
}

/* What the head of the request already decides, in this order. */
static unsigned head_status(const struct doh_server *s, const struct stream *st)
{
	if (st->header_bytes > DOH_SERVER_MAX_HEADERS)
		return 431;
	if (st->path_too_long)
		return 414;
	if (!st->path) /* CONNECT: nghttp2 lets only it through without :path */
		return st->method_status ? st->method_status : 400;
	if (!our_path(s, st->path))
		return 404;
	if (st->method_status)
		return st->method_status;
	if (st->method == DOH_SERVER_POST && !st->content_type_ok)
		return 415;
	if (st->method == DOH_SERVER_POST && st->declared_body > DOH_SERVER_MAX_BODY)
		return 413;
	return 0;
}

/* The dns= parameter of @path's query string, decoded into @st->buf. */
static bool decode_get(struct stream *st)
{
	const char *q = strchr(st->path, '?');

	while (q) {
		q++;
		size_t n = strcspn(q, "&");
		if (n >= 4 && memcmp(q, "dns=", 4) == 0) {
			size_t in = n - 4;
			if (in == 0 || !reserve(st, in / 4 * 3 + 3))
				return false;
			long len = doh_server_base64url_decode(q + 4, in, st->buf, st->cap);
			if (len <= 0)
				return false;
			st->len = (size_t)len;
			return true;
		}
		q = strchr(q, '&');
	}
	return false;
}

/* A DNS query, as far as the server is concerned: a header, parses, QR=0.
 * Anything else is the client's error (400), not a DNS one. */
static bool is_query(const uint8_t *msg, size_t len)
{
	struct wire_info info;

	return len >= WIRE_HEADER_LEN && wire_parse(msg, len, &info) == 0 &&
	       !(info.flags & WIRE_FLAG_QR);
}

/* The request of @st ended (END_STREAM): answer its error, or queue it. */
static int request_done(struct doh_server *s, struct stream *st)
{
	st->remote_ended = true;
	if (st->state != ST_BODY)
		return 0; /* answered already (413 before the end) */
	consume(s, st, st->unconsumed);
	st->unconsumed = 0;
	if (st->error)
		return respond_status(s, st, st->error);
	if (st->method != DOH_SERVER_POST) {
		st->len = 0;
		if (!decode_get(st))
			return respond_status(s, st, 400);
	}
	if (!is_query(st->buf, st->len))
		return respond_status(s, st, 400);
	st->state = ST_READY;
	enqueue(s, st);
	return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	struct doh_server *s = user_data;
	struct stream *st;
	int rc = 0;

	(void)session;
	if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
		return 0;
	st = stream_of(s, frame->hd.stream_id);
	if (!st)
		return 0;
	if (frame->hd.type == NGHTTP2_HEADERS && st->state == ST_HEADERS) {
		st->state = ST_BODY;
		st->error = head_status(s, st);
		if (st->error == 413 && !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
			rc = respond_status(s, st, 413); /* do not wait for the body */
	}
	if (rc == 0 && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
		rc = request_done(s, st);
	return rc == 0 ? 0 : NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int on_data_chunk_recv(nghttp2_session *session, uint8_t flags, int32_t stream_id,
			      const uint8_t *data, size_t len, void *user_data)
{
	struct doh_server *s = user_data;
	struct stream *st = stream_of(s, stream_id);

	(void)flags;
	if (!st) {
		nghttp2_session_consume_connection(session, len);
		return 0;
	}
	if (st->state != ST_BODY || st->error || st->method != DOH_SERVER_POST) {
		consume(s, st, len); /* not wanted: straight back to the window */
		return 0;
	}
	if (st->len + len > DOH_SERVER_MAX_BODY) {
		consume(s, st, st->unconsumed + len);
		st->unconsumed = 0;
		return respond_status(s, st, 413) == 0 ? 0 : NGHTTP2_ERR_CALLBACK_FAILURE;
	}
	if (!reserve(st, st->len + len))
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	memcpy(st->buf + st->len, data, len);
	st->len += len;
	st->unconsumed += len;
	return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
			   void *user_data)
{
	struct doh_server *s = user_data;
	struct stream *st = stream_of(s, stream_id);

	(void)error_code;
	if (!st)
		return 0;
	nghttp2_session_set_stream_user_data(session, stream_id, NULL);
	if (st->unconsumed)
		nghttp2_session_consume_connection(session, st->unconsumed);
	st->unconsumed = 0;
	if (st->state == ST_RESPONDING)
		s->unsent -= st->resp_len - st->sent;
	if (st->state == ST_DISPATCHED) {
		/* Someone is working on it: tell them to stop. */
		st->state = ST_CANCELLED;
		enqueue(s, st);
		return 0;
	}
	if (st->state == ST_READY)
		dequeue(s, st); /* reset before anyone saw it: it costs nothing more */
	stream_free(s, st);
	return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	struct doh_server *s = user_data;

	if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR) {
		/* nghttp2 gave up on the client (a flood, a rate limit): so do we,
		 * without waiting for the streams below the GOAWAY. */
		s->failed = true;
		return 0;
	}
	if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
	    (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
		struct stream *st = stream_of(s, frame->hd.stream_id);
		s->response_sent = true;
		if (st && st->early && !st->remote_ended)
			nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, st->id,
						  NGHTTP2_NO_ERROR);
	}
	return 0;
}

/* -- the session ----------------------------------------------------------------- */

struct doh_server *doh_server_new(const char *path)
{
	struct doh_server *s = calloc(1, sizeof(*s));
	nghttp2_session_callbacks *cbs = NULL;
	nghttp2_option *opt = NULL;

	if (!s || strlen(path) > DOH_SERVER_MAX_PATH_OPTION)
		goto fail;
	s->path_len = strlen(path);
	memcpy(s->path, path, s->path_len + 1);
	if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0)
		goto fail;
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_recv);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
	nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
	/* Every protection set explicitly, rather than trusting the defaults
	 * of whichever nghttp2 we are linked with. */
	nghttp2_option_set_no_auto_window_update(opt, 1);
	nghttp2_option_set_stream_reset_rate_limit(opt, DOH_SERVER_RESET_BURST,
						   DOH_SERVER_RESET_RATE);
	nghttp2_option_set_max_continuations(opt, DOH_SERVER_MAX_CONTINUATIONS);
	nghttp2_option_set_max_settings(opt, MAX_SETTINGS);
	nghttp2_option_set_max_outbound_ack(opt, MAX_OUTBOUND_ACK);
	nghttp2_option_set_no_closed_streams(opt, 1);
	nghttp2_option_set_max_deflate_dynamic_table_size(opt, HEADER_TABLE);
	if (nghttp2_session_server_new2(&s->session, cbs, s, opt) != 0)
		goto fail;
	nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, DOH_SERVER_MAX_STREAMS },
		{ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, DOH_SERVER_MAX_HEADERS },
		/* One byte more than a body may have, so that a longer one shows
		 * itself (413) before the window shuts. */
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, DOH_SERVER_MAX_BODY + 1 },
		{ NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, HEADER_TABLE },
		{ NGHTTP2_SETTINGS_MAX_FRAME_SIZE, MAX_FRAME },
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
		{ NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1 },
	};
	if (nghttp2_submit_settings(s->session, NGHTTP2_FLAG_NONE, iv,
				    sizeof(iv) / sizeof(iv[0])) ||
	    nghttp2_session_set_local_window_size(s->session, NGHTTP2_FLAG_NONE, 0,
						  DOH_SERVER_CONN_WINDOW))
		goto fail;
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cbs);
	return s;
fail:
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cbs);
	doh_server_free(s);
	return NULL;
}

void doh_server_free(struct doh_server *s)
{
	if (!s)
		return;
	nghttp2_session_del(s->session);
	for (struct stream *st = s->streams, *next; st; st = next) {
		next = st->next;
		stream_destroy(st);
	}
	free(s->out);
	free(s);
}

/* The start of an HTTP/1.x request line ("GET / HTTP/1.1"): a method token
 * in capitals and a space. */
static bool looks_like_http1(const uint8_t *data, size_t len)
{
	size_t i = 0;

	while (i < len && i < 16 && data[i] >= 'A' && data[i] <= 'Z')
		i++;
	return i > 0 && i < len && data[i] == ' ';
}

int doh_server_feed(struct doh_server *s, const uint8_t *data, size_t len)
{
	if (s->failed)
		return DOH_SERVER_ECLOSED;
	ssize_t n = nghttp2_session_mem_recv(s->session, data, len);
	if (n >= 0)
		return 0;
	if (n == NGHTTP2_ERR_NOMEM)
		return DOH_SERVER_ENOMEM;
	s->failed = true;
	if (n == NGHTTP2_ERR_BAD_CLIENT_MAGIC && looks_like_http1(data, len))
		s->http1 = HTTP1_REFUSE;
	else
		nghttp2_session_terminate_session(s->session, NGHTTP2_PROTOCOL_ERROR);
	return DOH_SERVER_EPROTO;
}

bool doh_server_next_event(struct doh_server *s, struct doh_server_event *ev)
{
	struct stream *st = s->ev_head;

	if (!st)
		return false;
	s->ev_head = st->ev_next;
	if (!s->ev_head)
		s->ev_tail = NULL;
	memset(ev, 0, sizeof(*ev));
	ev->stream_id = st->id;
	if (st->state == ST_CANCELLED) {
		ev->type = DOH_SERVER_CANCELLED;
		ev->user = st->user;
		stream_free(s, st);
		return true;
	}
	ev->type = DOH_SERVER_QUERY;
	ev->method = st->method;
	ev->msg = st->buf;
	ev->len = st->len;
	st->state = ST_DISPATCHED;
	return true;
}

int doh_server_set_user(struct doh_server *s, int32_t stream_id, void *user)
{
	struct stream *st = stream_of(s, stream_id);

	if (!st || st->state != ST_DISPATCHED)
		return DOH_SERVER_ENOENT;
	st->user = user;
	return 0;
}

int doh_server_respond(struct doh_server *s, int32_t stream_id, const uint8_t *msg, size_t len)
{
	struct stream *st = stream_of(s, stream_id);
	char length[16], cache[32];

	if (!st || st->state != ST_DISPATCHED)
		return DOH_SERVER_ENOENT;
	if (len > DOH_SERVER_MAX_BODY)
		return respond_status(s, st, 500);
	snprintf(length, sizeof(length), "%zu", len);
	snprintf(cache, sizeof(cache), "max-age=%u", (unsigned)max_age(msg, len));
	nghttp2_nv nva[] = { NV(":status", "200"), NV("content-type", dns_message),
			     NV("content-length", length), NV("cache-control", cache) };
	nghttp2_data_provider body = { .source.ptr = st, .read_callback = read_body };
	bool head = st->method == DOH_SERVER_HEAD;

	if (!head) {
		st->resp = malloc(len);
		if (!st->resp)
			return DOH_SERVER_ENOMEM;
		memcpy(st->resp, msg, len);
		st->resp_len = len;
	}
	st->state = ST_RESPONDING;
	if (nghttp2_submit_response(s->session, stream_id, nva, sizeof(nva) / sizeof(nva[0]),
				    head ? NULL : &body) != 0) {
		nghttp2_submit_rst_stream(s->session, NGHTTP2_FLAG_NONE, stream_id,
					  NGHTTP2_INTERNAL_ERROR);
		return DOH_SERVER_ENOMEM;
	}
	s->unsent += st->resp_len;
	return 0;
}

int doh_server_respond_status(struct doh_server *s, int32_t stream_id, unsigned status)
{
	struct stream *st = stream_of(s, stream_id);

	if (!st || st->state != ST_DISPATCHED)
		return DOH_SERVER_ENOENT;
	return respond_status(s, st, status);
}

/* Append @n bytes to the output buffer. */
static bool out_append(struct doh_server *s, const uint8_t *p, size_t n)
{
	if (s->out_len + n > s->out_cap) {
		size_t cap = s->out_cap ? s->out_cap : 16384;
		while (cap < s->out_len + n)
			cap *= 2;
		uint8_t *out = realloc(s->out, cap);
		if (!out)
			return false;
		s->out = out;
		s->out_cap = cap;
	}
	memcpy(s->out + s->out_len, p, n);
	s->out_len += n;
	return true;
}

const uint8_t *doh_server_output(struct doh_server *s, size_t *len)
{
	static const char refusal[] = "HTTP/1.1 505 HTTP Version Not Supported\r\n"
				      "Content-Length: 0\r\nConnection: close\r\n\r\n";

	s->out_len = 0;
	if (s->http1 != HTTP1_NO) {
		/* Not our SETTINGS: the client does not speak HTTP/2. */
		if (s->http1 == HTTP1_REFUSE &&
		    !out_append(s, (const uint8_t *)refusal, sizeof(refusal) - 1))
			s->out_len = 0;
		s->http1 = HTTP1_REFUSED;
		*len = s->out_len;
		return s->out;
	}
	while (s->out_len < OUT_SOFT) {
		const uint8_t *p;
		ssize_t n = nghttp2_session_mem_send(s->session, &p);
		if (n <= 0) {
			if (n < 0)
				s->failed = true;
			break;
		}
		if (!out_append(s, p, (size_t)n)) {
			s->failed = true;
			break;
		}
		/* nghttp2 reports a frame sent within the call that serialized it. */
		if (s->response_sent) {
			s->response_sent = false;
			break;
		}
	}
	*len = s->out_len;
	return s->out;
}

size_t doh_server_unsent(const struct doh_server *s)
{
	return s->unsent;
}

bool doh_server_alive(const struct doh_server *s)
{
	if (s->http1 != HTTP1_NO)
		return s->http1 == HTTP1_REFUSE;
	if (s->failed)
		return nghttp2_session_want_write(s->session);
	return nghttp2_session_want_read(s->session) || nghttp2_session_want_write(s->session);
}

bool doh_server_failed(const struct doh_server *s)
{
	return s->failed;
}

void doh_server_shutdown(struct doh_server *s)
{
	if (!s->failed)
		nghttp2_submit_goaway(s->session, NGHTTP2_FLAG_NONE,
				      nghttp2_session_get_last_proc_stream_id(s->session),
				      NGHTTP2_NO_ERROR, NULL, 0);
}

unsigned doh_server_take_rejected(struct doh_server *s)
{
	unsigned n = s->rejected;

	s->rejected = 0;
	return n;
}

/* -- base64url ------------------------------------------------------------------- */

static int b64url_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

long doh_server_base64url_decode(const char *in, size_t n, uint8_t *out, size_t cap)
{
	unsigned acc = 0, bits = 0;
	size_t o = 0;

	for (unsigned pad = 0; n > 0 && in[n - 1] == '=' && pad < 2; pad++)
		n--;
	if (n % 4 == 1 || n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0) > cap)
		return -1;
	for (size_t i = 0; i < n; i++) {
		int v = b64url_value(in[i]);
		if (v < 0)
			return -1;
		acc = (acc << 6 | (unsigned)v) & 0xfff;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (uint8_t)(acc >> bits);
		}
	}
	/* The bits left over must be zero: one encoding per message. */
	if (acc & ((1u << bits) - 1))
		return -1;
	return (long)o;
}
