/*
 * DoH over an nghttp2 client session on memory buffers.  Each query is a
 * struct stream, found by its ID in a small hash (nghttp2 only knows a
 * stream once its HEADERS are being sent, and forgets it when it closes;
 * we need it before and after).  nghttp2's callbacks only record: the
 * response head and body into the stream, and each stream that closes
 * into a queue that doh_next_event() empties.
 */
#include "lib/doh.h"

#include "lib/log.h"

#include <ctype.h>
#include <limits.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum {
	BUCKETS = 512,	       /* the hash of streams: more than DOH_MAX_STREAMS, a power of 2 */
	CONN_WINDOW = 1 << 20, /* receive window of the connection: many answers at once */
	FIRST_BODY = 512,      /* a body grows from this, or from its content-length */
};

struct stream {
	struct stream *hnext; /* hash chain */
	struct stream *qnext; /* the queue of ended streams */
	struct stream *dnext; /* the queue of requests not handed to nghttp2 yet */
	int32_t id;
	void *user;	/* NULL once cancelled: no event */
	bool submitted; /* handed to nghttp2 (not in `deferred` any more) */
	bool sent;	/* the request's HEADERS went out */
	bool early;	/* ...before the server's SETTINGS had come: its limit unknown */
	bool complete;	/* the response ended (END_STREAM) */
	bool closed;	/* nghttp2 closed it: it is queued, current, or freed */
	bool too_large; /* the body passed DOH_MAX_BODY */
	bool reset;	/* we reset it */
	bool dns_type;	/* content-type: application/dns-message */
	unsigned status;
	uint32_t age;
	uint32_t error_code; /* from the close */
	uint8_t *body;
	size_t body_len, body_cap;
	uint8_t *req; /* POST: the message (owned), sent as the body */
	size_t req_len, req_off;
	char *get_path; /* GET: the path with ?dns= (owned), until submitted */
};

struct doh_session {
	nghttp2_session *h2;
	char *authority; /* owned */
	char *path;	 /* owned */
	enum doh_method method;
	struct stream *buckets[BUCKETS];
	unsigned n_open;			  /* submitted, not closed */
	struct stream *deferred, **deferred_tail; /* submitted, not given to nghttp2 yet */
	unsigned n_deferred;
	struct stream *done, **done_tail; /* ended, event not taken yet */
	struct stream *current;		  /* the last event's: freed at the next */
	unsigned ping_acks;		  /* PING acks not reported yet */
	bool goaway_event;		  /* a GOAWAY not reported yet */
	bool goaway_received;
	int32_t goaway_last_id;
	uint32_t goaway_code;
	bool shutdown; /* doh_shutdown(): our GOAWAY */
	bool broken;   /* a connection error: error[] says why */
	bool settings; /* the server's first SETTINGS came */
	uint64_t pings;
	char error[256];
};

static struct stream **slot(const struct doh_session *s, int32_t id)
{
	return (struct stream **)&s->buckets[((uint32_t)id >> 1) & (BUCKETS - 1)];
}

static struct stream *find(const struct doh_session *s, int32_t id)
{
	struct stream *st = *slot(s, id);

	while (st && st->id != id)
		st = st->hnext;
	return st;
}

static void stream_free(struct doh_session *s, struct stream *st)
{
	struct stream **p = slot(s, st->id);

	while (*p && *p != st)
		p = &(*p)->hnext;
	if (*p)
		*p = st->hnext;
	free(st->body);
	free(st->req);
	free(st->get_path);
	free(st);
}

static void set_error(struct doh_session *s, const char *what, const char *detail)
{
	snprintf(s->error, sizeof(s->error), "%s%s", what, detail);
}

static void refuse_deferred(struct doh_session *s);

/* No request may start now (stream IDs aside). */
static bool closing_now(const struct doh_session *s)
{
	return s->broken || s->goaway_received || s->shutdown;
}

/* -- nghttp2 callbacks: record, never act ------------------------------------- */

static bool is_dns_message(const uint8_t *v, size_t len)
{
	static const char type[] = "application/dns-message";
	size_t n = sizeof(type) - 1;

	if (len < n || strncasecmp((const char *)v, type, n) != 0)
		return false;
	while (n < len && (v[n] == ' ' || v[n] == '\t'))
		n++;
	return n == len || v[n] == ';'; /* parameters are allowed, none is needed */
}

/* delta-seconds (RFC 9111 §1.2.2): digits only, saturating; else absent. */
static uint32_t parse_age(const uint8_t *v, size_t len)
{
	uint64_t age = 0;

	if (len == 0)
		return 0;
	for (size_t i = 0; i < len; i++) {
		if (!isdigit(v[i]))
			return 0;
		age = age * 10 + (uint64_t)(v[i] - '0');
		if (age > UINT32_MAX)
			age = UINT32_MAX;
	}
	return (uint32_t)age;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
		     void *arg)
{
	struct stream *st = find(arg, frame->hd.stream_id);

	(void)h2;
	(void)flags;
	if (!st || frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
		/* nghttp2 checked it is 3 digits.  A new head (after a 1xx)
		 * starts afresh. */
		st->status = valuelen == 3 ? (unsigned)((value[0] - '0') * 100 +
							(value[1] - '0') * 10 + (value[2] - '0'))
					   : 0;
		st->dns_type = false;
		st->age = 0;
	} else if (namelen == 12 && memcmp(name, "content-type", 12) == 0) {
		st->dns_type = is_dns_message(value, valuelen);
	} else if (namelen == 3 && memcmp(name, "age", 3) == 0) {
		st->age = parse_age(value, valuelen);
	} else if (namelen == 14 && memcmp(name, "content-length", 14) == 0 && !st->body) {
		/* A hint for the first allocation (nghttp2 holds the server to it). */
		uint32_t n = parse_age(value, valuelen); /* the same grammar */
		st->body_cap = n <= DOH_MAX_BODY ? n : 0;
	}
	return 0;
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t stream_id, const uint8_t *data,
			 size_t len, void *arg)
{
	struct doh_session *s = arg;
	struct stream *st = find(s, stream_id);

	(void)h2;
	(void)flags;
	if (!st || st->too_large || !st->user)
		return 0;
	if (len > DOH_MAX_BODY - st->body_len) {
		st->too_large = true; /* reset once this frame is known not to end it */
		return 0;
	}
	if (!st->body || st->body_len + len > st->body_cap) {
		size_t cap = st->body_cap ? st->body_cap : FIRST_BODY;
		while (cap < st->body_len + len)
			cap *= 2;
		if (cap > DOH_MAX_BODY)
			cap = DOH_MAX_BODY;
		uint8_t *p = realloc(st->body, cap);
		require(p);
		st->body = p;
		st->body_cap = cap;
	}
	memcpy(st->body + st->body_len, data, len);
	st->body_len += len;
	return 0;
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame, void *arg)
{
	struct doh_session *s = arg;

	switch (frame->hd.type) {
	case NGHTTP2_HEADERS:
	case NGHTTP2_DATA: {
		struct stream *st = find(s, frame->hd.stream_id);
		if (!st)
			break;
		if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
			st->complete = true;
		} else if (st->too_large && !st->reset) {
			/* More than a DNS message and more to come: stop it.  A
			 * frame that ends the stream needs no reset. */
			st->reset = true;
			nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
		}
		break;
	}
	case NGHTTP2_GOAWAY:
		s->goaway_received = true;
		s->goaway_event = true;
		s->goaway_last_id = frame->goaway.last_stream_id;
		s->goaway_code = frame->goaway.error_code;
		refuse_deferred(s);
		break;
	case NGHTTP2_PING:
		if (frame->hd.flags & NGHTTP2_FLAG_ACK)
			s->ping_acks++;
		break;
	case NGHTTP2_SETTINGS:
		if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
			s->settings = true;
		break;
	default:
		break;
	}
	return 0;
}

static int on_frame_send(nghttp2_session *h2, const nghttp2_frame *frame, void *arg)
{
	struct doh_session *s = arg;

	(void)h2;
	if (frame->hd.type == NGHTTP2_HEADERS) {
		struct stream *st = find(s, frame->hd.stream_id);
		if (st) {
			st->sent = true;
			st->early = !s->settings;
		}
	} else if (frame->hd.type == NGHTTP2_GOAWAY && !s->shutdown) {
		/* nghttp2 ends the session over a connection error of the server's. */
		s->broken = true;
		if (!s->error[0])
			set_error(s, "HTTP/2 protocol error; we sent GOAWAY ",
				  doh_error_code_name(frame->goaway.error_code));
	}
	return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t stream_id, uint32_t error_code, void *arg)
{
	struct doh_session *s = arg;
	struct stream *st = find(s, stream_id);

	(void)h2;
	if (!st || st->closed)
		return 0;
	st->closed = true;
	st->error_code = error_code;
	if (s->n_open)
		s->n_open--;
	if (!st->user) {
		stream_free(s, st);
		return 0;
	}
	st->qnext = NULL;
	*s->done_tail = st;
	s->done_tail = &st->qnext;
	return 0;
}

static int on_error(nghttp2_session *h2, int lib_error_code, const char *msg, size_t len, void *arg)
{
	struct doh_session *s = arg;

	(void)h2;
	(void)lib_error_code;
	/* Stream errors come here too; kept for the log if the session breaks. */
	snprintf(s->error, sizeof(s->error), "HTTP/2 protocol error: %.*s",
		 (int)(len < 200 ? len : 200), msg);
	return 0;
}

static ssize_t read_body(nghttp2_session *h2, int32_t stream_id, uint8_t *buf, size_t length,
			 uint32_t *data_flags, nghttp2_data_source *source, void *arg)
{
	struct stream *st = source->ptr;
	size_t n = st->req_len - st->req_off;

	(void)h2;
	(void)stream_id;
	(void)arg;
	if (n > length)
		n = length;
	memcpy(buf, st->req + st->req_off, n);
	st->req_off += n;
	if (st->req_off == st->req_len) {
		*data_flags |= NGHTTP2_DATA_FLAG_EOF;
		free(st->req);
		st->req = NULL;
	}
	return (ssize_t)n;
}

/* -- the session --------------------------------------------------------------- */

struct doh_session *doh_session_new(const char *authority, const char *path, enum doh_method method)
{
	struct doh_session *s = calloc(1, sizeof(*s));
	nghttp2_session_callbacks *cbs = NULL;
	nghttp2_option *opt = NULL;
	/* No server push; a stream's window holds a whole DNS message. */
	static const nghttp2_settings_entry settings[] = {
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, DOH_MAX_BODY },
	};

	if (!s)
		return NULL;
	s->done_tail = &s->done;
	s->deferred_tail = &s->deferred;
	s->method = method;
	s->authority = strdup(authority);
	s->path = strdup(path);
	if (!s->authority || !s->path || nghttp2_session_callbacks_new(&cbs) != 0 ||
	    nghttp2_option_new(&opt) != 0)
		goto fail;
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
	nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
	nghttp2_session_callbacks_set_error_callback2(cbs, on_error);
	nghttp2_option_set_peer_max_concurrent_streams(opt, DOH_ASSUMED_STREAMS);
	int rc = nghttp2_session_client_new2(&s->h2, cbs, s, opt);
	nghttp2_session_callbacks_del(cbs);
	nghttp2_option_del(opt);
	cbs = NULL;
	opt = NULL;
	if (rc != 0)
		goto fail;
	if (nghttp2_submit_settings(s->h2, NGHTTP2_FLAG_NONE, settings,
				    sizeof(settings) / sizeof(settings[0])) != 0 ||
	    nghttp2_session_set_local_window_size(s->h2, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW) != 0)
		goto fail;
	return s;
fail:
	nghttp2_session_callbacks_del(cbs);
	nghttp2_option_del(opt);
	doh_session_free(s);
	return NULL;
}

void doh_session_free(struct doh_session *s)
{
	if (!s)
		return;
	nghttp2_session_del(s->h2); /* calls no stream-close callback */
	for (unsigned i = 0; i < BUCKETS; i++) {
		while (s->buckets[i])
			stream_free(s, s->buckets[i]);
	}
	free(s->authority);
	free(s->path);
	free(s);
}

int doh_feed(struct doh_session *s, const uint8_t *data, size_t len)
{
	if (s->broken)
		return DOH_EPROTO;
	ssize_t n = nghttp2_session_mem_recv(s->h2, data, len);
	if (n < 0) {
		s->broken = true;
		set_error(s, "HTTP/2 session failed: ", nghttp2_strerror((int)n));
		return DOH_EPROTO;
	}
	return 0;
}

static size_t base64url(const uint8_t *in, size_t len, char *out)
{
	static const char abc[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t o = 0, i = 0;

	for (; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = abc[v >> 18];
		out[o++] = abc[(v >> 12) & 63];
		out[o++] = abc[(v >> 6) & 63];
		out[o++] = abc[v & 63];
	}
	if (len - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;
		out[o++] = abc[v >> 18];
		out[o++] = abc[(v >> 12) & 63];
	} else if (len - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		out[o++] = abc[v >> 18];
		out[o++] = abc[(v >> 12) & 63];
		out[o++] = abc[(v >> 6) & 63];
	}
	return o; /* RFC 8484 §6: no padding */
}

#define NV(n, v, vlen)                                                                             \
	{                                                                                          \
		(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vlen), NGHTTP2_NV_FLAG_NONE        \
	}

/* Hand @st's request to nghttp2 now. */
static void start_request(struct doh_session *s, struct stream *st)
{
	char clen[8];
	int32_t id;

	if (st->get_path) {
		const nghttp2_nv get[] = {
			NV(":method", "GET", 3),
			NV(":scheme", "https", 5),
			NV(":authority", s->authority, strlen(s->authority)),
			NV(":path", st->get_path, strlen(st->get_path)),
			NV("accept", "application/dns-message", 23),
		};
		id = nghttp2_submit_request(s->h2, NULL, get, sizeof(get) / sizeof(get[0]), NULL,
					    st);
		free(st->get_path);
		st->get_path = NULL;
	} else {
		snprintf(clen, sizeof(clen), "%zu", st->req_len);
		const nghttp2_nv post[] = {
			NV(":method", "POST", 4),
			NV(":scheme", "https", 5),
			NV(":authority", s->authority, strlen(s->authority)),
			NV(":path", s->path, strlen(s->path)),
			NV("content-type", "application/dns-message", 23),
			NV("accept", "application/dns-message", 23),
			NV("content-length", clen, strlen(clen)),
		};
		nghttp2_data_provider body = { .source.ptr = st, .read_callback = read_body };
		id = nghttp2_submit_request(s->h2, NULL, post, sizeof(post) / sizeof(post[0]),
					    &body, st);
	}
	/* doh_submit() told the caller this ID: nghttp2 numbers requests in the
	 * order they are submitted, and only we submit them. */
	require(id == st->id);
}

/* A deferred request that will never go out (a GOAWAY, our shutdown): it
 * ends unprocessed, as nghttp2 ends those it had not sent. */
static void refuse_deferred(struct doh_session *s)
{
	while (s->deferred) {
		struct stream *st = s->deferred;
		s->deferred = st->dnext;
		s->n_deferred--;
		st->closed = true;
		st->error_code = NGHTTP2_REFUSED_STREAM;
		s->n_open--;
		if (!st->user) {
			stream_free(s, st);
			continue;
		}
		st->qnext = NULL;
		*s->done_tail = st;
		s->done_tail = &st->qnext;
	}
	s->deferred_tail = &s->deferred;
}

int32_t doh_submit(struct doh_session *s, const uint8_t *msg, size_t len, void *user)
{
	size_t path_len = strlen(s->path);

	if (len == 0 || len > DOH_MAX_BODY)
		return DOH_EINVAL;
	if (doh_room(s) == 0)
		return doh_closing(s) ? DOH_ECLOSING : DOH_EFULL;
	struct stream *st = calloc(1, sizeof(*st));
	require(st);
	st->user = user;
	if (s->method == DOH_GET && path_len + 5 + (len + 2) / 3 * 4 + 1 <= DOH_MAX_GET_PATH) {
		st->get_path = malloc(path_len + 5 + (len + 2) / 3 * 4 + 1);
		require(st->get_path);
		memcpy(st->get_path, s->path, path_len);
		memcpy(st->get_path + path_len, strchr(s->path, '?') ? "&dns=" : "?dns=", 5);
		size_t n = base64url(msg, len, st->get_path + path_len + 5);
		st->get_path[path_len + 5 + n] = '\0';
	} else {
		st->req = malloc(len);
		require(st->req);
		memcpy(st->req, msg, len);
		st->req_len = len;
	}
	/* The request reaches nghttp2 only in doh_output(), after the previous
	 * one's body: nghttp2 would send every queued HEADERS before any DATA,
	 * and some servers (Knot Resolver) refuse a stream that begins while
	 * another's request is incomplete.  Its ID is the one nghttp2 will give
	 * it then. */
	st->id = (int32_t)(nghttp2_session_get_next_stream_id(s->h2) + 2 * s->n_deferred);
	st->hnext = *slot(s, st->id);
	*slot(s, st->id) = st;
	*s->deferred_tail = st;
	s->deferred_tail = &st->dnext;
	s->n_deferred++;
	s->n_open++;
	return st->id;
}

size_t doh_output(struct doh_session *s, const uint8_t **data)
{
	for (;;) {
		ssize_t n = nghttp2_session_mem_send(s->h2, data);
		if (n < 0) {
			s->broken = true;
			set_error(s, "HTTP/2 session failed: ", nghttp2_strerror((int)n));
			refuse_deferred(s);
			return 0;
		}
		if (n > 0 || !s->deferred)
			return (size_t)n;
		/* All sent: the next request, its HEADERS then its DATA. */
		if (closing_now(s)) {
			refuse_deferred(s);
			continue;
		}
		struct stream *st = s->deferred;
		s->deferred = st->dnext;
		if (!s->deferred)
			s->deferred_tail = &s->deferred;
		s->n_deferred--;
		st->submitted = true;
		start_request(s, st);
	}
}

void doh_cancel(struct doh_session *s, int32_t stream_id)
{
	struct stream *st = find(s, stream_id);

	if (!st || !st->user)
		return;
	st->user = NULL;
	if (st == s->current)
		return; /* freed at the next event */
	if (!st->closed && !st->submitted) {
		/* Still ours alone: nghttp2 never hears of it. */
		struct stream **d = &s->deferred;
		while (*d != st)
			d = &(*d)->dnext;
		*d = st->dnext;
		if (s->deferred_tail == &st->dnext)
			s->deferred_tail = d;
		s->n_deferred--;
		s->n_open--;
		stream_free(s, st);
		return;
	}
	if (!st->closed) {
		/* Frees the server's slot for it; a request not sent yet is
		 * dropped instead.  Never after a complete response. */
		if (!st->complete)
			nghttp2_submit_rst_stream(s->h2, NGHTTP2_FLAG_NONE, stream_id,
						  NGHTTP2_CANCEL);
		return; /* freed when nghttp2 closes it */
	}
	/* Ended, its event not taken: out of the queue. */
	struct stream **p = &s->done;
	while (*p && *p != st)
		p = &(*p)->qnext;
	if (*p) {
		*p = st->qnext;
		if (s->done_tail == &st->qnext)
			s->done_tail = p;
	}
	stream_free(s, st);
}

/* Stream IDs not yet promised to a request (deferred ones included). */
static uint32_t ids_left(struct doh_session *s)
{
	uint64_t next = nghttp2_session_get_next_stream_id(s->h2) + 2ull * s->n_deferred;

	return next > INT32_MAX ? 0 : (uint32_t)(((uint64_t)INT32_MAX - next) / 2 + 1);
}

unsigned doh_room(struct doh_session *s)
{
	if (doh_closing(s))
		return 0;
	uint32_t limit =
	    nghttp2_session_get_remote_settings(s->h2, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
	uint32_t ids = ids_left(s);

	if (limit > DOH_MAX_STREAMS)
		limit = DOH_MAX_STREAMS;
	unsigned room = limit > s->n_open ? limit - s->n_open : 0;
	return ids < room ? ids : room;
}

unsigned doh_streams(const struct doh_session *s)
{
	return s->n_open;
}

bool doh_closing(struct doh_session *s)
{
	return closing_now(s) || ids_left(s) == 0;
}

bool doh_finished(struct doh_session *s)
{
	return s->broken ||
	       (!nghttp2_session_want_read(s->h2) && !nghttp2_session_want_write(s->h2));
}

bool doh_stream_sent(const struct doh_session *s, int32_t stream_id)
{
	const struct stream *st = find(s, stream_id);

	return st && st->sent;
}

int doh_ping(struct doh_session *s)
{
	uint8_t opaque[8];
	uint64_t n = ++s->pings;

	for (int i = 0; i < 8; i++)
		opaque[i] = (uint8_t)(n >> (8 * i));
	return nghttp2_submit_ping(s->h2, NGHTTP2_FLAG_NONE, opaque) == 0 ? 0 : DOH_EPROTO;
}

void doh_shutdown(struct doh_session *s)
{
	if (s->shutdown)
		return;
	s->shutdown = true;
	refuse_deferred(s);
	nghttp2_session_terminate_session(s->h2, NGHTTP2_NO_ERROR);
}

/* What a closed stream amounts to. */
static enum doh_result result_of(const struct stream *st)
{
	if (st->too_large)
		return DOH_TOO_LARGE;
	/* Not processed: never sent, refused, or -- sent before the server's
	 * SETTINGS said how many streams it takes -- reset as a protocol error,
	 * which RFC 9113 §5.1.2 allows for streams beyond that limit.  (Sending
	 * a DNS query twice is harmless; the upstream layer bounds how often.) */
	if (!st->complete)
		return !st->sent || st->error_code == NGHTTP2_REFUSED_STREAM ||
			       (st->early && st->error_code == NGHTTP2_PROTOCOL_ERROR)
			   ? DOH_REFUSED
			   : DOH_RESET;
	if (st->status != 200)
		return DOH_HTTP_STATUS;
	return st->dns_type ? DOH_ANSWER : DOH_CONTENT_TYPE;
}

bool doh_next_event(struct doh_session *s, struct doh_event *ev)
{
	if (s->current) {
		stream_free(s, s->current);
		s->current = NULL;
	}
	memset(ev, 0, sizeof(*ev));
	if (s->goaway_event) {
		s->goaway_event = false;
		ev->type = DOH_EV_GOAWAY;
		ev->last_stream_id = s->goaway_last_id;
		ev->error_code = s->goaway_code;
		return true;
	}
	if (s->ping_acks) {
		s->ping_acks--;
		ev->type = DOH_EV_PING_ACK;
		return true;
	}
	struct stream *st = s->done;
	if (!st)
		return false;
	s->done = st->qnext;
	if (!s->done)
		s->done_tail = &s->done;
	s->current = st;
	ev->type = DOH_EV_STREAM;
	ev->stream_id = st->id;
	ev->user = st->user;
	ev->result = result_of(st);
	ev->status = st->status;
	ev->age = st->age;
	ev->error_code = st->error_code;
	if (ev->result == DOH_ANSWER) {
		ev->body = st->body;
		ev->body_len = st->body_len;
	}
	return true;
}

const char *doh_error(const struct doh_session *s)
{
	return s->error[0] ? s->error : "HTTP/2 session failed";
}

const char *doh_error_code_name(uint32_t code)
{
	return nghttp2_http2_strerror(code);
}

size_t doh_make_query(const uint8_t *msg, size_t len, bool pad, uint8_t *out, size_t cap)
{
	struct wire_upstream_opts opts = { .pad = pad, .keepalive = false };
	struct wire_info info;

	if (wire_parse(msg, len, &info) != 0)
		return 0;
	size_t n = wire_make_upstream_query(msg, &info, &opts, out, cap);
	if (n)
		wire_set_id(out, 0);
	return n;
}

int doh_check_answer(uint8_t *msg, size_t len, uint32_t age, struct wire_info *info)
{
	if (wire_parse(msg, len, info) != 0 || !(info->flags & WIRE_FLAG_QR) || info->id != 0)
		return -1;
	if (age)
		wire_rewrite_ttls(msg, len, info, age, 0);
	return 0;
}

int doh_set_next_stream_id(struct doh_session *s, int32_t id)
{
	if (s->n_deferred)
		return DOH_EINVAL;
	return nghttp2_session_set_next_stream_id(s->h2, id) == 0 ? 0 : DOH_EINVAL;
}
