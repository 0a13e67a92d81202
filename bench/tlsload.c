/*
 * tlsload: new TLS connections per second against a DoT or DoH server, for
 * the handshake rows of `bench/run.py --serve` (bench/README.md).
 *
 * Each of THREADS threads keeps its share of CONNS connections under way on
 * its own epoll loop. One connection is: TCP connect, TLS handshake, one DNS
 * query and its answer (DoT: a length-prefixed message; DoH: an HTTP/2 GET
 * /dns-query?dns=...), close_notify, close; then the next one starts. The
 * query proves that the server finished its side of the handshake (in TLS
 * 1.3 the client is done a flight earlier) and brings the server's session
 * tickets to us before the answer. Connections completed within SECONDS are
 * counted; one JSON object goes to stdout.
 *
 * Full (default): no session offered, every handshake is a full one.
 * Resumed (-r): after one full handshake per thread (not counted), every
 * connection offers the newest ticket its thread has received. It offers a
 * copy: OpenSSL's client spends a TLS 1.3 ticket once (RFC 8446 C.4) and
 * then marks it unusable, while the servers here (stateless tickets) accept
 * one again; a server that issued no new ticket on resumption would
 * otherwise see every other connection as a full handshake. "tickets" in
 * the output counts the tickets received, so the report can say how many a
 * server gives per full handshake and per resumption.
 *
 * Why C: the bench's client shares two CPUs with the server under test, and
 * a TLS client costs about as much CPU per handshake as the server (it
 * checks the signature the server makes). Measured against dotproxy on the
 * 2-CPU VM, one query per connection: Python's ssl spent 1.1 ms of CPU per
 * full handshake against the server's 0.8; `openssl s_time -new` ~0.75 ms,
 * but `s_time -reuse` never resumes under TLS 1.3 (it reads nothing after
 * the handshake, so it never gets a ticket) and reports whole seconds.
 *
 * The certificate chain is not verified (a real client would; that costs
 * the client, not the server); the server still signs its handshake, and
 * SNI is sent. DoT offers no ALPN (as dnsperf and kdig), DoH offers "h2".
 *
 *   tlsload -p PORT [-a 127.0.0.1] [-m dot|doh] [-r] [-c 16] [-T 2] [-l 5]
 *           [-s SNI] [-u /dns-query] [-n n1.bench.example]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS      4096
#define OUT_MAX	       2048
#define IN_MAX	       (16384 + 9 + 256) /* one HTTP/2 frame of the default maximum size */
#define PRIME_NS       3000000000ull	 /* resumed mode: at most this long to get a ticket */
#define H2_PREFACE     "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define H2_DATA	       0x0
#define H2_HEADERS     0x1
#define H2_RST	       0x3
#define H2_SETTINGS    0x4
#define H2_GOAWAY      0x7
#define H2_END_STREAM  0x1
#define H2_ACK	       0x1
#define H2_END_HEADERS 0x4
#define H2_PADDED      0x8

enum mode { MODE_DOT, MODE_DOH };

enum conn_state { CONN_FREE, CONN_CONNECTING, CONN_HANDSHAKE, CONN_IO };

/* What stopped a connection before its answer: the failure counters. */
enum fail { FAIL_CONNECT, FAIL_HANDSHAKE, FAIL_IO, FAIL_ANSWER, FAIL_N };
static const char *const fail_names[FAIL_N] = { "connect", "handshake", "io", "answer" };

struct config {
	struct sockaddr_in addr;
	enum mode mode;
	bool resume;
	int conns, threads;
	double seconds;
	const char *sni, *path, *qname;
};

struct worker;

struct conn {
	struct worker *w;
	enum conn_state state;
	int fd;
	SSL *ssl;	      /* owned; freed when the connection ends */
	uint16_t qid;	      /* DoT: the query's ID (DoH sends 0, RFC 8484) */
	uint64_t t_start;     /* connect() */
	uint64_t t_handshake; /* handshake done */
	uint8_t out[OUT_MAX]; /* ciphertext not yet accepted by SSL_write: out[out_off..out_len) */
	size_t out_len, out_off;
	uint8_t in[IN_MAX]; /* plaintext read, not yet parsed */
	size_t in_len;
	size_t answer_len; /* DoH: DATA bytes of stream 1 gathered in answer[] */
	uint8_t answer[512];
	bool resumed;
	unsigned tickets; /* session tickets received on this connection */
};

struct worker {
	const struct config *cfg;
	pthread_t thread;
	SSL_CTX *ctx;
	int epfd;
	SSL_SESSION *session;	/* owned: the newest session a server gave us */
	struct conn *conns;	/* nconns_all of them: cfg->conns / threads */
	int nconns, nconns_all; /* in use (1 while priming), allocated */
	bool counting;		/* past priming: completions count */
	uint64_t deadline;	/* CLOCK_MONOTONIC ns */
	uint64_t completed, resumed, noerror, tickets;
	uint64_t failed[FAIL_N];
	char first_error[160];
	double *hs_ms, *conn_ms; /* per completed connection; grown as needed */
	size_t nlat, caplat;
	char version[32], cipher[64], group[32], alpn[16];
};

static uint8_t query[512];
static size_t query_len;
static char doh_path[1024]; /* the path (< 256 bytes) and ?dns=, base64url of query[] */
static pthread_barrier_t barrier;
static int conn_ex_index;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- messages --------------------------------------------------------- */

static int build_query(const char *name)
{
	static const uint8_t header[12] = { 0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0 };
	memcpy(query, header, sizeof(header));
	size_t n = sizeof(header);
	const char *label = name;
	while (*label) {
		const char *dot = strchr(label, '.');
		size_t len = dot ? (size_t)(dot - label) : strlen(label);
		if (len == 0 || len > 63 || n + len + 6 > sizeof(query))
			return -EINVAL;
		query[n++] = (uint8_t)len;
		memcpy(query + n, label, len);
		n += len;
		label += len + (dot ? 1 : 0);
	}
	static const uint8_t tail[5] = { 0, 0, 1, 0, 1 }; /* root, type A, class IN */
	memcpy(query + n, tail, sizeof(tail));
	query_len = n + sizeof(tail);
	return 0;
}

static size_t base64url(const uint8_t *in, size_t len, char *out)
{
	static const char tab[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t o = 0;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)in[i + 1] << 8;
		if (i + 2 < len)
			v |= in[i + 2];
		out[o++] = tab[(v >> 18) & 63];
		out[o++] = tab[(v >> 12) & 63];
		if (i + 1 < len)
			out[o++] = tab[(v >> 6) & 63];
		if (i + 2 < len)
			out[o++] = tab[v & 63];
	}
	out[o] = '\0';
	return o; /* no padding (RFC 8484 section 6) */
}

/* An HPACK integer with an N-bit prefix whose high bits are @first. */
static size_t hpack_int(uint8_t *p, uint8_t first, int nbits, size_t v)
{
	size_t max = ((size_t)1 << nbits) - 1, n = 0;
	if (v < max) {
		p[n++] = (uint8_t)(first | v);
		return n;
	}
	p[n++] = (uint8_t)(first | max);
	v -= max;
	while (v >= 128) {
		p[n++] = (uint8_t)(0x80 | (v & 127));
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

/* "Literal header field without indexing, indexed name" (RFC 7541 6.2.2). */
static size_t hpack_literal(uint8_t *p, size_t name_index, const char *value)
{
	size_t len = strlen(value);
	size_t n = hpack_int(p, 0x00, 4, name_index);
	n += hpack_int(p + n, 0x00, 7, len); /* not Huffman-coded */
	memcpy(p + n, value, len);
	return n + len;
}

static void frame_header(uint8_t *p, size_t len, uint8_t type, uint8_t flags, uint32_t stream)
{
	p[0] = (uint8_t)(len >> 16);
	p[1] = (uint8_t)(len >> 8);
	p[2] = (uint8_t)len;
	p[3] = type;
	p[4] = flags;
	p[5] = (uint8_t)(stream >> 24);
	p[6] = (uint8_t)(stream >> 16);
	p[7] = (uint8_t)(stream >> 8);
	p[8] = (uint8_t)stream;
}

/* The first flight after the handshake: the query (DoT), or the HTTP/2
 * preface, an empty SETTINGS and a GET on stream 1 (DoH). */
static void queue_request(struct conn *c)
{
	const struct config *cfg = c->w->cfg;
	uint8_t *p = c->out;
	if (cfg->mode == MODE_DOT) {
		c->qid =
		    (uint16_t)(c->t_start >> 10); /* varies enough; only matched, never guessed */
		p[0] = (uint8_t)(query_len >> 8);
		p[1] = (uint8_t)query_len;
		memcpy(p + 2, query, query_len);
		p[2] = (uint8_t)(c->qid >> 8);
		p[3] = (uint8_t)c->qid;
		c->out_len = query_len + 2;
		c->out_off = 0;
		return;
	}
	size_t n = sizeof(H2_PREFACE) - 1;
	memcpy(p, H2_PREFACE, n);
	frame_header(p + n, 0, H2_SETTINGS, 0, 0);
	n += 9;
	size_t hdr = n;
	n += 9;
	p[n++] = 0x82; /* :method GET (static table 2) */
	p[n++] = 0x87; /* :scheme https (7) */
	n += hpack_literal(p + n, 1, cfg->sni ? cfg->sni : "127.0.0.1"); /* :authority */
	n += hpack_literal(p + n, 4, doh_path);				 /* :path */
	n += hpack_literal(p + n, 19, "application/dns-message");	 /* accept */
	frame_header(p + hdr, n - hdr - 9, H2_HEADERS, H2_END_STREAM | H2_END_HEADERS, 1);
	c->out_len = n;
	c->out_off = 0;
}

/* ---- results ---------------------------------------------------------- */

static void note_error(struct worker *w, enum fail why, const char *what)
{
	if (!w->counting)
		return;
	w->failed[why]++;
	if (!w->first_error[0]) {
		unsigned long e = ERR_peek_error();
		char ssl_err[120] = "";
		if (e)
			ERR_error_string_n(e, ssl_err, sizeof(ssl_err));
		snprintf(w->first_error, sizeof(w->first_error), "%s: %s%s%s", fail_names[why],
			 what, ssl_err[0] ? ": " : "", ssl_err);
	}
}

static void add_latency(struct worker *w, double hs, double total)
{
	if (w->nlat == w->caplat) {
		size_t cap = w->caplat ? w->caplat * 2 : 4096;
		double *a = realloc(w->hs_ms, cap * sizeof(double));
		double *b = a ? realloc(w->conn_ms, cap * sizeof(double)) : NULL;
		if (!a || !b) {
			fprintf(stderr, "tlsload: out of memory\n");
			exit(2);
		}
		w->hs_ms = a;
		w->conn_ms = b;
		w->caplat = cap;
	}
	w->hs_ms[w->nlat] = hs;
	w->conn_ms[w->nlat] = total;
	w->nlat++;
}

static void note_tls(struct worker *w, SSL *ssl)
{
	if (w->version[0])
		return;
	snprintf(w->version, sizeof(w->version), "%s", SSL_get_version(ssl));
	snprintf(w->cipher, sizeof(w->cipher), "%s", SSL_get_cipher_name(ssl));
	const char *g = SSL_group_to_name(ssl, (int)SSL_get_negotiated_group(ssl));
	snprintf(w->group, sizeof(w->group), "%s", g ? g : "?");
	const unsigned char *alpn = NULL;
	unsigned int alpn_len = 0;
	SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
	if (alpn_len >= sizeof(w->alpn))
		alpn_len = sizeof(w->alpn) - 1;
	memcpy(w->alpn, alpn ? (const char *)alpn : "", alpn_len);
	w->alpn[alpn_len] = '\0';
}

/* ---- connections ------------------------------------------------------ */

static int want(struct conn *c, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = c };
	return epoll_ctl(c->w->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* End a connection (answered or not); loop_until() starts the next one
 * (not from here: a connect() refused at once would recurse). */
static void conn_end(struct conn *c, bool answered, bool noerror)
{
	struct worker *w = c->w;
	uint64_t t = now_ns();
	if (c->ssl) {
		if (answered) {
			ERR_clear_error();
			SSL_shutdown(c->ssl); /* close_notify, once; the reply is not awaited */
		}
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0) {
		close(c->fd); /* also removes it from the epoll set */
		c->fd = -1;
	}
	c->state = CONN_FREE;
	if (answered && w->counting && t <= w->deadline) {
		w->completed++;
		w->resumed += c->resumed;
		w->noerror += noerror;
		w->tickets += c->tickets;
		add_latency(w, (double)(c->t_handshake - c->t_start) / 1e6,
			    (double)(t - c->t_start) / 1e6);
	}
	ERR_clear_error();
}

static void conn_fail(struct conn *c, enum fail why, const char *what)
{
	note_error(c->w, why, what);
	conn_end(c, false, false);
}

static void conn_start(struct conn *c)
{
	struct worker *w = c->w;
	c->in_len = c->out_len = c->out_off = c->answer_len = 0;
	c->resumed = false;
	c->tickets = 0;
	c->t_start = now_ns();
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		c->state = CONN_FREE;
		note_error(w, FAIL_CONNECT, strerror(errno));
		return;
	}
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->state = CONN_CONNECTING;
	struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
		conn_fail(c, FAIL_CONNECT, strerror(errno));
		return;
	}
	if (connect(c->fd, (const struct sockaddr *)&w->cfg->addr, sizeof(w->cfg->addr)) < 0 &&
	    errno != EINPROGRESS) {
		conn_fail(c, FAIL_CONNECT, strerror(errno));
		return;
	}
}

/* Send what is queued; 0 when all of it went, 1 when SSL wants to wait. */
static int flush(struct conn *c)
{
	while (c->out_off < c->out_len) {
		ERR_clear_error();
		int n = SSL_write(c->ssl, c->out + c->out_off, (int)(c->out_len - c->out_off));
		if (n > 0) {
			c->out_off += (size_t)n;
			continue;
		}
		int e = SSL_get_error(c->ssl, n);
		if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
			return 1;
		return -1;
	}
	c->out_len = c->out_off = 0;
	return 0;
}

static void queue_out(struct conn *c, const uint8_t *data, size_t len)
{
	if (c->out_off > 0 && c->out_off == c->out_len)
		c->out_len = c->out_off = 0;
	if (c->out_len + len <= sizeof(c->out)) {
		memcpy(c->out + c->out_len, data, len);
		c->out_len += len;
	}
}

/* DoT: the answer is complete when its length prefix is satisfied.
 * Returns 1 (done, *noerror set), 0 (need more), -1 (not our answer). */
static int parse_dot(struct conn *c, bool *noerror)
{
	if (c->in_len < 2)
		return 0;
	size_t len = (size_t)c->in[0] << 8 | c->in[1];
	if (c->in_len < len + 2)
		return 0;
	if (len < 12 || (c->in[2] << 8 | c->in[3]) != c->qid || !(c->in[4] & 0x80))
		return -1;
	*noerror = (c->in[5] & 0x0f) == 0;
	return 1;
}

/* DoH: HTTP/2 frames; done at END_STREAM on stream 1. SETTINGS are
 * acknowledged; GOAWAY or RST_STREAM end the connection unanswered. */
static int parse_doh(struct conn *c, bool *noerror)
{
	size_t off = 0;
	int done = 0;
	while (!done && c->in_len - off >= 9) {
		const uint8_t *f = c->in + off;
		size_t len = (size_t)f[0] << 16 | (size_t)f[1] << 8 | f[2];
		uint8_t type = f[3], flags = f[4];
		uint32_t stream =
		    ((uint32_t)f[5] << 24 | (uint32_t)f[6] << 16 | (uint32_t)f[7] << 8 | f[8]) &
		    0x7fffffffu;
		if (len + 9 > sizeof(c->in))
			return -1;
		if (c->in_len - off < len + 9)
			break;
		const uint8_t *payload = f + 9;
		if (type == H2_SETTINGS && !(flags & H2_ACK)) {
			uint8_t ack[9];
			frame_header(ack, 0, H2_SETTINGS, H2_ACK, 0);
			queue_out(c, ack, sizeof(ack));
		} else if (type == H2_GOAWAY || (type == H2_RST && stream == 1)) {
			return -1;
		} else if (type == H2_DATA && stream == 1) {
			size_t pad = 0, skip = 0;
			if (flags & H2_PADDED) {
				if (len < 1)
					return -1;
				pad = payload[0];
				skip = 1;
			}
			if (pad + skip > len)
				return -1;
			size_t n = len - skip - pad;
			if (c->answer_len + n > sizeof(c->answer))
				return -1;
			memcpy(c->answer + c->answer_len, payload + skip, n);
			c->answer_len += n;
		}
		if (stream == 1 && (type == H2_DATA || type == H2_HEADERS) &&
		    (flags & H2_END_STREAM))
			done = 1;
		off += len + 9;
	}
	memmove(c->in, c->in + off, c->in_len - off);
	c->in_len -= off;
	if (!done)
		return 0;
	if (c->answer_len < 12 || c->answer[0] || c->answer[1] || !(c->answer[2] & 0x80))
		return -1;
	*noerror = (c->answer[3] & 0x0f) == 0;
	return 1;
}

static void conn_io(struct conn *c)
{
	int rc = flush(c);
	if (rc < 0) {
		conn_fail(c, FAIL_IO, "write");
		return;
	}
	for (;;) {
		if (c->in_len == sizeof(c->in)) {
			conn_fail(c, FAIL_ANSWER, "answer too large");
			return;
		}
		ERR_clear_error();
		int n = SSL_read(c->ssl, c->in + c->in_len, (int)(sizeof(c->in) - c->in_len));
		if (n <= 0) {
			int e = SSL_get_error(c->ssl, n);
			if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
				break;
			conn_fail(c, FAIL_IO,
				  e == SSL_ERROR_ZERO_RETURN ? "closed before the answer"
				  : e == SSL_ERROR_SYSCALL   ? "connection reset or EOF"
							     : "read");
			return;
		}
		c->in_len += (size_t)n;
		bool noerror = false;
		int done =
		    c->w->cfg->mode == MODE_DOT ? parse_dot(c, &noerror) : parse_doh(c, &noerror);
		if (done < 0) {
			conn_fail(c, FAIL_ANSWER, "unexpected answer");
			return;
		}
		if (done) {
			conn_end(c, true, noerror);
			return;
		}
		if (flush(c) < 0) { /* a SETTINGS ack */
			conn_fail(c, FAIL_IO, "write");
			return;
		}
	}
	want(c, EPOLLIN | (c->out_off < c->out_len ? EPOLLOUT : 0));
}

static void conn_handshake(struct conn *c)
{
	ERR_clear_error();
	int rc = SSL_connect(c->ssl);
	if (rc == 1) {
		c->t_handshake = now_ns();
		c->resumed = SSL_session_reused(c->ssl);
		note_tls(c->w, c->ssl);
		c->state = CONN_IO;
		queue_request(c);
		conn_io(c);
		return;
	}
	int e = SSL_get_error(c->ssl, rc);
	if (e == SSL_ERROR_WANT_READ)
		want(c, EPOLLIN);
	else if (e == SSL_ERROR_WANT_WRITE)
		want(c, EPOLLOUT);
	else
		conn_fail(c, FAIL_HANDSHAKE, e == SSL_ERROR_SYSCALL ? "reset or EOF" : "TLS error");
}

static void conn_event(struct conn *c)
{
	struct worker *w = c->w;
	switch (c->state) {
	case CONN_FREE:
		return;
	case CONN_CONNECTING: {
		int err = 0;
		socklen_t len = sizeof(err);
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
			conn_fail(c, FAIL_CONNECT, strerror(err ? err : errno));
			return;
		}
		c->ssl = SSL_new(w->ctx);
		if (!c->ssl || !SSL_set_fd(c->ssl, c->fd)) {
			conn_fail(c, FAIL_HANDSHAKE, "SSL_new");
			return;
		}
		SSL_set_ex_data(c->ssl, conn_ex_index, c);
		if (w->cfg->sni)
			SSL_set_tlsext_host_name(c->ssl, w->cfg->sni);
		if (w->cfg->resume && w->session) {
			/* A copy: OpenSSL's client marks a TLS 1.3 session it
			 * resumed as spent (single use, RFC 8446 C.4). */
			SSL_SESSION *copy = SSL_SESSION_dup(w->session);
			if (copy) {
				SSL_set_session(c->ssl, copy);
				SSL_SESSION_free(copy);
			}
		}
		c->state = CONN_HANDSHAKE;
		conn_handshake(c);
		return;
	}
	case CONN_HANDSHAKE:
		conn_handshake(c);
		return;
	case CONN_IO:
		conn_io(c);
		return;
	}
}

/* A session ticket (or TLS 1.2 session) arrived: count it, keep the newest. */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
	struct conn *c = SSL_get_ex_data(ssl, conn_ex_index);
	if (!c)
		return 0;
	c->tickets++;
	if (c->w->session)
		SSL_SESSION_free(c->w->session);
	c->w->session = sess;
	return 1; /* we keep the reference */
}

/* ---- threads ---------------------------------------------------------- */

static void loop_until(struct worker *w, uint64_t until, bool (*stop)(struct worker *))
{
	struct epoll_event evs[64];
	while (now_ns() < until && !(stop && stop(w))) {
		for (int i = 0; i < w->nconns; i++)
			if (w->conns[i].state == CONN_FREE)
				conn_start(&w->conns[i]); /* the next connection */
		uint64_t left_ms = (until - now_ns()) / 1000000 + 1;
		int n = epoll_wait(w->epfd, evs, 64, left_ms > 100 ? 100 : (int)left_ms);
		for (int i = 0; i < n; i++)
			conn_event(evs[i].data.ptr);
	}
}

static bool has_session(struct worker *w)
{
	return w->session != NULL;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	/* Resumed mode: full handshakes until the server has given us a ticket,
	 * not counted. Both modes wait for the other threads before timing. */
	if (w->cfg->resume) {
		w->nconns = 1;
		loop_until(w, now_ns() + PRIME_NS, has_session);
		w->nconns = w->nconns_all;
	}
	pthread_barrier_wait(&barrier);
	w->counting = true;
	w->deadline = now_ns() + (uint64_t)(w->cfg->seconds * 1e9);
	loop_until(w, w->deadline, NULL);
	for (int i = 0; i < w->nconns_all; i++)
		if (w->conns[i].state != CONN_FREE)
			conn_end(&w->conns[i], false, false); /* in flight at the deadline */
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double percentile(const double *v, size_t n, double p)
{
	if (!n)
		return 0;
	size_t k = (size_t)(p / 100.0 * (double)n + 0.5);
	k = k ? k - 1 : 0;
	return v[k < n ? k : n - 1];
}

static void usage(void)
{
	fprintf(stderr, "usage: tlsload -p PORT [-a ADDR] [-m dot|doh] [-r] [-c CONNS] [-T THREADS]"
			" [-l SECONDS] [-s SNI] [-u PATH] [-n QNAME]\n");
	exit(2);
}

static SSL_CTX *client_ctx(const struct config *cfg)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx)
		return NULL;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_session_cache_mode(ctx,
				       SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
	if (cfg->mode == MODE_DOH)
		SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)"\x02h2", 3);
	return ctx;
}

int main(int argc, char **argv)
{
	struct config cfg = { .mode = MODE_DOT,
			      .conns = 16,
			      .threads = 2,
			      .seconds = 5,
			      .path = "/dns-query",
			      .qname = "n1.bench.example" };
	cfg.addr.sin_family = AF_INET;
	cfg.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int port = 0, opt;
	while ((opt = getopt(argc, argv, "a:p:m:rc:T:l:s:u:n:")) != -1) {
		switch (opt) {
		case 'a':
			if (inet_pton(AF_INET, optarg, &cfg.addr.sin_addr) != 1)
				usage();
			break;
		case 'p':
			port = (int)strtol(optarg, NULL, 10);
			break;
		case 'm':
			if (!strcmp(optarg, "dot"))
				cfg.mode = MODE_DOT;
			else if (!strcmp(optarg, "doh"))
				cfg.mode = MODE_DOH;
			else
				usage();
			break;
		case 'r':
			cfg.resume = true;
			break;
		case 'c':
			cfg.conns = (int)strtol(optarg, NULL, 10);
			break;
		case 'T':
			cfg.threads = (int)strtol(optarg, NULL, 10);
			break;
		case 'l':
			cfg.seconds = strtod(optarg, NULL);
			break;
		case 's':
			cfg.sni = optarg;
			break;
		case 'u':
			cfg.path = optarg;
			break;
		case 'n':
			cfg.qname = optarg;
			break;
		default:
			usage();
		}
	}
	if (port <= 0 || port > 65535 || cfg.threads < 1 || cfg.conns < cfg.threads ||
	    cfg.conns > MAX_CONNS || cfg.seconds <= 0 || build_query(cfg.qname) < 0)
		usage();
	cfg.addr.sin_port = htons((uint16_t)port);
	if (strlen(cfg.path) >= 256)
		usage();
	char b64[700];
	base64url(query, query_len, b64);
	snprintf(doh_path, sizeof(doh_path), "%s?dns=%s", cfg.path, b64);
	conn_ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);

	struct worker *ws = calloc((size_t)cfg.threads, sizeof(*ws));
	if (!ws)
		return 2;
	pthread_barrier_init(&barrier, NULL, (unsigned)cfg.threads);
	for (int t = 0; t < cfg.threads; t++) {
		struct worker *w = &ws[t];
		w->cfg = &cfg;
		w->nconns = cfg.conns / cfg.threads + (t < cfg.conns % cfg.threads);
		w->nconns_all = w->nconns;
		w->conns = calloc((size_t)w->nconns, sizeof(*w->conns));
		w->ctx = client_ctx(&cfg);
		w->epfd = epoll_create1(EPOLL_CLOEXEC);
		if (!w->conns || !w->ctx || w->epfd < 0) {
			fprintf(stderr, "tlsload: cannot set up thread %d\n", t);
			return 2;
		}
		for (int i = 0; i < w->nconns; i++) {
			w->conns[i].w = w;
			w->conns[i].fd = -1;
		}
	}
	struct rusage ru0, ru1;
	getrusage(RUSAGE_SELF, &ru0);
	uint64_t t0 = now_ns();
	for (int t = 0; t < cfg.threads; t++)
		if (pthread_create(&ws[t].thread, NULL, worker_main, &ws[t]) != 0) {
			fprintf(stderr, "tlsload: pthread_create failed\n");
			return 2;
		}
	for (int t = 0; t < cfg.threads; t++)
		pthread_join(ws[t].thread, NULL);
	getrusage(RUSAGE_SELF, &ru1);
	double wall = (double)(now_ns() - t0) / 1e9;

	/* Merge the threads' counts and latencies. */
	uint64_t completed = 0, resumed = 0, noerror = 0, tickets = 0, failed[FAIL_N] = { 0 };
	size_t nlat = 0;
	for (int t = 0; t < cfg.threads; t++) {
		completed += ws[t].completed;
		resumed += ws[t].resumed;
		noerror += ws[t].noerror;
		tickets += ws[t].tickets;
		for (int f = 0; f < FAIL_N; f++)
			failed[f] += ws[t].failed[f];
		nlat += ws[t].nlat;
	}
	double *hs = malloc((nlat + 1) * sizeof(double)),
	       *total = malloc((nlat + 1) * sizeof(double));
	if (!hs || !total)
		return 2;
	size_t k = 0;
	for (int t = 0; t < cfg.threads; t++) {
		memcpy(hs + k, ws[t].hs_ms, ws[t].nlat * sizeof(double));
		memcpy(total + k, ws[t].conn_ms, ws[t].nlat * sizeof(double));
		k += ws[t].nlat;
	}
	qsort(hs, nlat, sizeof(double), cmp_double);
	qsort(total, nlat, sizeof(double), cmp_double);
	const struct worker *first = &ws[0];
	const char *first_error = "";
	for (int t = 0; t < cfg.threads; t++)
		if (ws[t].first_error[0]) {
			first_error = ws[t].first_error;
			break;
		}
	for (int t = 0; t < cfg.threads && !first->version[0]; t++)
		first = &ws[t];
	double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
		     (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
		     (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
		     (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;

	printf("{\"mode\": \"%s\", \"resume\": %s, \"threads\": %d, \"concurrency\": %d, "
	       "\"seconds\": %.3f, \"completed\": %llu, \"rate\": %.1f, \"resumed\": %llu, "
	       "\"noerror\": %llu, \"tickets\": %llu, \"failed\": {",
	       cfg.mode == MODE_DOT ? "dot" : "doh", cfg.resume ? "true" : "false", cfg.threads,
	       cfg.conns, cfg.seconds, (unsigned long long)completed,
	       (double)completed / cfg.seconds, (unsigned long long)resumed,
	       (unsigned long long)noerror, (unsigned long long)tickets);
	for (int f = 0; f < FAIL_N; f++)
		printf("%s\"%s\": %llu", f ? ", " : "", fail_names[f],
		       (unsigned long long)failed[f]);
	printf("}, \"first_error\": \"");
	for (const char *p = first_error; *p; p++)
		if (*p != '"' && *p != '\\' && (unsigned char)*p >= 0x20)
			putchar(*p);
	printf("\", \"handshake_ms\": {\"p50\": %.3f, \"p99\": %.3f}, "
	       "\"connection_ms\": {\"p50\": %.3f, \"p99\": %.3f}, "
	       "\"tls\": {\"version\": \"%s\", \"cipher\": \"%s\", \"group\": \"%s\", "
	       "\"alpn\": \"%s\"}, \"client_cpu_s\": %.3f, \"wall_s\": %.3f}\n",
	       percentile(hs, nlat, 50), percentile(hs, nlat, 99), percentile(total, nlat, 50),
	       percentile(total, nlat, 99), first->version, first->cipher, first->group,
	       first->alpn, cpu, wall);
	return 0;
}
