/*
 * tlsload: TLS load against a DoT or DoH server, for the serving tables of
 * `bench/run.py` (bench/README.md, "Serving DoT and DoH"). Two loads:
 *
 * New connections (default): each of THREADS threads keeps its share of
 * CONNS connections under way on its own epoll loop. One connection is: TCP
 * connect, TLS handshake, one DNS query and its answer (DoT: a length-
 * prefixed message; DoH: an HTTP/2 GET /dns-query?dns=...), close_notify,
 * close; then the next one starts. The query proves that the server
 * finished its side of the handshake (in TLS 1.3 the client is done a
 * flight earlier) and brings the server's session tickets to us before the
 * answer. Output: connections completed per second.
 *   Full: no session offered, every handshake is a full one.
 *   Resumed (-r): after one full handshake per thread (not counted), every
 *   connection offers the newest ticket its thread has received. It offers
 *   a copy: OpenSSL's client spends a TLS 1.3 ticket once (RFC 8446 C.4)
 *   and then marks it unusable, while the servers here (stateless tickets)
 *   accept one again; a server that issues no new ticket on a resumption
 *   would otherwise see every other connection as a full handshake.
 *   "tickets" counts the tickets received, so the report can say how many a
 *   server gives per full handshake and per resumption.
 *
 * Queries (-k WINDOW): CONNS long-lived connections, each with WINDOW
 * queries outstanding: a new query goes out for each answer (DoT: pipelined
 * with distinct IDs; DoH: one stream each). A connection the server closes
 * is opened again (counted). Output: NOERROR answers per second. This is
 * the DoH throughput load because dnsperf 2.10's DoH client loses answers
 * from dnsdist 1.7 (h2o) as soon as two are outstanding on a connection
 * (`-c 1 -q 2`: queries time out, with the answers sent), while this client
 * gets every one.
 *
 * Names come from a dnsperf data file (-d, "name TYPE" lines, A only), in
 * order, wrapping around, so that no two queries in flight are the same
 * name (a server may merge identical queries); -n asks one name.
 *
 * Why C: the client shares two CPUs with the server under test, and a TLS
 * client costs about as much CPU per handshake as the server (it checks the
 * signature the server makes). Measured against dotproxy on the 2-CPU VM,
 * one query per connection: Python's ssl spent 1.1 ms of CPU per full
 * handshake against the server's 0.8; `openssl s_time -new` ~0.75 ms, but
 * `s_time -reuse` never resumes under TLS 1.3 (it reads nothing after the
 * handshake, so it never gets a ticket) and reports whole seconds.
 *
 * The certificate chain is not verified (a real client would; that costs
 * the client, not the server); the server still signs its handshake, and
 * SNI is sent. DoT offers no ALPN (as dnsperf and kdig), DoH offers "h2".
 * HTTP/2: requests are one HEADERS frame each (static-table HPACK, no
 * Huffman); the server's header blocks are skipped, the DNS answer in the
 * DATA frames tells success; our receive windows are opened to 2^31-1 at
 * the start and topped up; SETTINGS and PINGs are acknowledged.
 *
 *   tlsload -p PORT [-a 127.0.0.1] [-m dot|doh] [-r | -k WINDOW] [-c 16] [-T 2]
 *           [-l 5] [-s SNI] [-u /dns-query] [-d FILE | -n n1.bench.example]
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
#define MAX_WINDOW     256
#define MAX_NAMES      1000000
#define OUT_MAX	       65536
#define IN_MAX	       (16384 + 9 + 256) /* one HTTP/2 frame of the default maximum size */
#define ANSWER_MAX     512
#define PRIME_NS       3000000000ull /* resumed mode: at most this long to get a ticket */
#define H2_PREFACE     "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define H2_DATA	       0x0
#define H2_HEADERS     0x1
#define H2_RST	       0x3
#define H2_SETTINGS    0x4
#define H2_PING	       0x6
#define H2_GOAWAY      0x7
#define H2_WINDOW      0x8
#define H2_END_STREAM  0x1
#define H2_ACK	       0x1
#define H2_END_HEADERS 0x4
#define H2_PADDED      0x8
#define H2_MAX_WINDOW  0x7fffffffu
#define H2_TOP_UP      (1u << 30) /* received DATA bytes before a WINDOW_UPDATE */

enum mode { MODE_DOT, MODE_DOH };

enum conn_state { CONN_FREE, CONN_CONNECTING, CONN_HANDSHAKE, CONN_IO };

/* What stopped a connection or query short: the failure counters. */
enum fail { FAIL_CONNECT, FAIL_HANDSHAKE, FAIL_IO, FAIL_ANSWER, FAIL_N };
static const char *const fail_names[FAIL_N] = { "connect", "handshake", "io", "answer" };

struct config {
	struct sockaddr_in addr;
	enum mode mode;
	bool resume;
	unsigned window; /* queries outstanding per connection; 0: one query, then close */
	int conns, threads;
	double seconds;
	const char *sni, *path, *qname, *names_file;
};

/* One name to ask, ready to send: the DNS message (ID 0) and, for DoH, the
 * HPACK block of its GET. */
struct question {
	uint8_t *msg, *block;
	size_t msg_len, block_len;
};

/* A query outstanding on a connection. */
struct slot {
	bool used;
	uint16_t id;  /* DoT */
	uint32_t sid; /* DoH stream */
	size_t len;   /* DoH: answer bytes gathered */
	uint8_t answer[ANSWER_MAX];
};

struct worker;

struct conn {
	struct worker *w;
	enum conn_state state;
	int fd;
	SSL *ssl;	      /* owned; freed when the connection ends */
	uint64_t t_start;     /* connect() */
	uint64_t t_handshake; /* handshake done */
	uint8_t *out;	      /* plaintext for SSL_write: out[out_off..out_len); OUT_MAX */
	size_t out_len, out_off;
	uint8_t in[IN_MAX]; /* plaintext read, not yet parsed */
	size_t in_len;
	struct slot *slots; /* window of them (1 for new connections) */
	unsigned nslots, inflight;
	unsigned max_streams; /* DoH: the server's SETTINGS_MAX_CONCURRENT_STREAMS */
	uint16_t next_id;
	uint32_t next_sid;
	uint64_t rx_data;  /* DoH: DATA bytes since the last WINDOW_UPDATE */
	uint64_t retry_at; /* after a failed connect: not before this */
	bool resumed, noerror, answered;
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
	size_t next_name;	/* the next question to ask */
	bool counting;		/* past priming: completions count */
	uint64_t deadline;	/* CLOCK_MONOTONIC ns */
	uint64_t completed, resumed, noerror, tickets, answers, answers_noerror, opened;
	uint64_t failed[FAIL_N];
	char first_error[160];
	double *hs_ms, *conn_ms; /* per completed connection; grown as needed */
	size_t nlat, caplat;
	char version[32], cipher[64], group[32], alpn[16];
};

static struct question *questions;
static size_t nquestions;
static pthread_barrier_t barrier;
static int conn_ex_index;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- messages --------------------------------------------------------- */

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

/* Add one name (type A) to questions[]: 0, or -EINVAL for a bad name. */
static int add_question(const struct config *cfg, const char *name)
{
	uint8_t msg[300];
	static const uint8_t header[12] = { 0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0 };
	memcpy(msg, header, sizeof(header));
	size_t n = sizeof(header);
	const char *label = name;
	while (*label) {
		const char *dot = strchr(label, '.');
		size_t len = dot ? (size_t)(dot - label) : strlen(label);
		if (len == 0 || len > 63 || n + len + 6 > 12 + 255)
			return -EINVAL;
		msg[n++] = (uint8_t)len;
		memcpy(msg + n, label, len);
		n += len;
		label += len + (dot ? 1 : 0);
	}
	static const uint8_t tail[5] = { 0, 0, 1, 0, 1 }; /* root, type A, class IN */
	memcpy(msg + n, tail, sizeof(tail));
	n += sizeof(tail);

	struct question *q = &questions[nquestions];
	q->msg = malloc(n);
	if (!q->msg)
		return -ENOMEM;
	memcpy(q->msg, msg, n);
	q->msg_len = n;
	q->block = NULL;
	q->block_len = 0;
	if (cfg->mode == MODE_DOH) {
		char b64[420], path[700];
		base64url(msg, n, b64);
		snprintf(path, sizeof(path), "%s?dns=%s", cfg->path, b64);
		uint8_t block[1024];
		size_t b = 0;
		block[b++] = 0x82; /* :method GET (static table 2) */
		block[b++] = 0x87; /* :scheme https (7) */
		b +=
		    hpack_literal(block + b, 1, cfg->sni ? cfg->sni : "127.0.0.1"); /* :authority */
		b += hpack_literal(block + b, 4, path);				    /* :path */
		b += hpack_literal(block + b, 19, "application/dns-message");	    /* accept */
		q->block = malloc(b);
		if (!q->block)
			return -ENOMEM;
		memcpy(q->block, block, b);
		q->block_len = b;
	}
	nquestions++;
	return 0;
}

static int load_questions(const struct config *cfg)
{
	size_t cap = 1024;
	questions = calloc(cap, sizeof(*questions));
	if (!questions)
		return -ENOMEM;
	if (!cfg->names_file)
		return add_question(cfg, cfg->qname);
	FILE *f = fopen(cfg->names_file, "r");
	if (!f)
		return -errno;
	char line[512];
	int rc = 0;
	while (rc == 0 && nquestions < MAX_NAMES && fgets(line, sizeof(line), f)) {
		char *name = line + strspn(line, " \t");
		name[strcspn(name, " \t\r\n")] = '\0';
		if (!name[0] || name[0] == ';')
			continue;
		size_t len = strlen(name);
		if (len > 1 && name[len - 1] == '.')
			name[len - 1] = '\0';
		if (nquestions == cap) {
			struct question *more = realloc(questions, 2 * cap * sizeof(*questions));
			if (!more) {
				rc = -ENOMEM;
				break;
			}
			questions = more;
			cap *= 2;
		}
		rc = add_question(cfg, name);
	}
	fclose(f);
	return rc ? rc : nquestions ? 0 : -EINVAL;
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
		if (a)
			w->hs_ms = a;
		double *b = a ? realloc(w->conn_ms, cap * sizeof(double)) : NULL;
		if (!a || !b) {
			fprintf(stderr, "tlsload: out of memory\n");
			exit(2);
		}
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

/* End a connection; loop_until() starts the next one (not from here: a
 * connect() refused at once would recurse). @done: its one query was
 * answered (new-connection load), it counts as completed. */
static void conn_end(struct conn *c, bool done)
{
	struct worker *w = c->w;
	uint64_t t = now_ns();
	if (c->ssl) {
		if (done) {
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
	if (done && w->counting && t <= w->deadline) {
		w->completed++;
		w->resumed += c->resumed;
		w->noerror += c->noerror;
		w->tickets += c->tickets;
		add_latency(w, (double)(c->t_handshake - c->t_start) / 1e6,
			    (double)(t - c->t_start) / 1e6);
	}
	ERR_clear_error();
}

static void conn_fail(struct conn *c, enum fail why, const char *what)
{
	note_error(c->w, why, what);
	conn_end(c, false);
	if (why == FAIL_CONNECT)
		c->retry_at = now_ns() + 10000000; /* 10 ms: no busy loop on a closed port */
}

static void conn_start(struct conn *c)
{
	struct worker *w = c->w;
	c->in_len = c->out_len = c->out_off = 0;
	c->inflight = 0;
	memset(c->slots, 0, c->nslots * sizeof(*c->slots));
	c->next_sid = 1;
	c->max_streams = MAX_WINDOW;
	c->rx_data = 0;
	c->resumed = c->noerror = c->answered = false;
	c->tickets = 0;
	c->t_start = now_ns();
	if (w->counting)
		w->opened++;
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

static void queue_out(struct conn *c, const uint8_t *data, size_t len)
{
	if (c->out_off > 0 && c->out_off == c->out_len)
		c->out_len = c->out_off = 0;
	if (c->out_len + len > OUT_MAX && c->out_off > 0) {
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
	if (c->out_len + len <= OUT_MAX) {
		memcpy(c->out + c->out_len, data, len);
		c->out_len += len;
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

/* Queue the next name into a free slot. */
static void send_query(struct conn *c)
{
	struct worker *w = c->w;
	struct slot *s = NULL;
	for (unsigned i = 0; i < c->nslots && !s; i++)
		if (!c->slots[i].used)
			s = &c->slots[i];
	if (!s)
		return;
	const struct question *q = &questions[w->next_name];
	w->next_name = (w->next_name + 1) % nquestions;
	s->used = true;
	s->len = 0;
	c->inflight++;
	if (w->cfg->mode == MODE_DOT) {
		uint8_t buf[2 + 300];
		s->id = c->next_id++;
		buf[0] = (uint8_t)(q->msg_len >> 8);
		buf[1] = (uint8_t)q->msg_len;
		memcpy(buf + 2, q->msg, q->msg_len);
		buf[2] = (uint8_t)(s->id >> 8);
		buf[3] = (uint8_t)s->id;
		queue_out(c, buf, q->msg_len + 2);
		return;
	}
	uint8_t hdr[9];
	s->sid = c->next_sid;
	c->next_sid += 2;
	frame_header(hdr, q->block_len, H2_HEADERS, H2_END_STREAM | H2_END_HEADERS, s->sid);
	queue_out(c, hdr, sizeof(hdr));
	queue_out(c, q->block, q->block_len);
}

/* Fill the window (DoH: within the server's stream limit). */
static void fill_window(struct conn *c)
{
	unsigned limit = c->nslots;
	if (c->w->cfg->mode == MODE_DOH && c->max_streams < limit)
		limit = c->max_streams;
	while (c->inflight < limit && (c->w->cfg->window || !c->answered))
		send_query(c);
}

/* The first flight after the handshake: DoH's preface, our SETTINGS (no
 * push; stream windows at the maximum) and the connection's window opened
 * to the maximum; then the queries. */
static void start_session(struct conn *c)
{
	if (c->w->cfg->mode == MODE_DOH) {
		uint8_t b[sizeof(H2_PREFACE) - 1 + 9 + 12 + 9 + 4];
		size_t n = sizeof(H2_PREFACE) - 1;
		memcpy(b, H2_PREFACE, n);
		frame_header(b + n, 12, H2_SETTINGS, 0, 0);
		n += 9;
		static const uint8_t settings[12] = {
			0, 2, 0, 0, 0, 0, 0, 4, 0x7f, 0xff, 0xff, 0xff
		};
		memcpy(b + n, settings, sizeof(settings));
		n += sizeof(settings);
		frame_header(b + n, 4, H2_WINDOW, 0, 0);
		n += 9;
		uint32_t inc = H2_MAX_WINDOW - 65535;
		b[n++] = (uint8_t)(inc >> 24);
		b[n++] = (uint8_t)(inc >> 16);
		b[n++] = (uint8_t)(inc >> 8);
		b[n++] = (uint8_t)inc;
		queue_out(c, b, n);
	}
	c->next_id = (uint16_t)(c->t_start >> 10); /* only matched, never guessed */
	fill_window(c);
}

/* One answer came for slot @s: count it; the new-connection load then ends
 * the connection, the query load asks the next name. Returns true when the
 * connection ended. */
static bool answered(struct conn *c, struct slot *s, bool ok, bool noerror)
{
	struct worker *w = c->w;
	s->used = false;
	c->inflight--;
	if (!ok) {
		note_error(w, FAIL_ANSWER, "unexpected answer");
		if (!w->cfg->window) {
			conn_end(c, false);
			return true;
		}
	} else if (w->counting && now_ns() <= w->deadline) {
		w->answers++;
		w->answers_noerror += noerror;
	}
	c->answered = true;
	c->noerror = noerror;
	if (!w->cfg->window) {
		conn_end(c, ok);
		return true;
	}
	return false;
}

/* DoT: complete answers in in[]. Returns -1 when the connection ended, 0. */
static int parse_dot(struct conn *c)
{
	size_t off = 0;
	int rc = 0;
	while (c->in_len - off >= 2) {
		const uint8_t *m = c->in + off;
		size_t len = (size_t)m[0] << 8 | m[1];
		if (c->in_len - off < len + 2)
			break;
		off += len + 2;
		struct slot *s = NULL;
		uint16_t id = len >= 12 ? (uint16_t)(m[2] << 8 | m[3]) : 0;
		for (unsigned i = 0; i < c->nslots && !s && len >= 12; i++)
			if (c->slots[i].used && c->slots[i].id == id)
				s = &c->slots[i];
		if (!s) {
			note_error(c->w, FAIL_ANSWER, "answer to no query of ours");
			continue;
		}
		if (answered(c, s, (m[4] & 0x80) != 0, (m[5] & 0x0f) == 0)) {
			rc = -1;
			break;
		}
	}
	if (rc == 0) {
		memmove(c->in, c->in + off, c->in_len - off);
		c->in_len -= off;
	}
	return rc;
}

static struct slot *stream_slot(struct conn *c, uint32_t sid)
{
	for (unsigned i = 0; i < c->nslots; i++)
		if (c->slots[i].used && c->slots[i].sid == sid)
			return &c->slots[i];
	return NULL;
}

/* DoH: HTTP/2 frames in in[]. Returns -1 when the connection ended, 0. */
static int parse_doh(struct conn *c)
{
	size_t off = 0;
	while (c->in_len - off >= 9) {
		const uint8_t *f = c->in + off;
		size_t len = (size_t)f[0] << 16 | (size_t)f[1] << 8 | f[2];
		uint8_t type = f[3], flags = f[4];
		uint32_t sid =
		    ((uint32_t)f[5] << 24 | (uint32_t)f[6] << 16 | (uint32_t)f[7] << 8 | f[8]) &
		    0x7fffffffu;
		if (len + 9 > sizeof(c->in)) {
			conn_fail(c, FAIL_ANSWER, "HTTP/2 frame too large");
			return -1;
		}
		if (c->in_len - off < len + 9)
			break;
		const uint8_t *payload = f + 9;
		off += len + 9;
		struct slot *s = sid ? stream_slot(c, sid) : NULL;
		if (type == H2_SETTINGS && !(flags & H2_ACK)) {
			for (size_t i = 0; i + 6 <= len; i += 6)
				if (payload[i] == 0 &&
				    payload[i + 1] == 3) /* MAX_CONCURRENT_STREAMS */
					c->max_streams = (unsigned)payload[i + 2] << 24 |
							 (unsigned)payload[i + 3] << 16 |
							 (unsigned)payload[i + 4] << 8 |
							 payload[i + 5];
			uint8_t ack[9];
			frame_header(ack, 0, H2_SETTINGS, H2_ACK, 0);
			queue_out(c, ack, sizeof(ack));
		} else if (type == H2_PING && !(flags & H2_ACK) && len == 8) {
			uint8_t pong[17];
			frame_header(pong, 8, H2_PING, H2_ACK, 0);
			memcpy(pong + 9, payload, 8);
			queue_out(c, pong, sizeof(pong));
		} else if (type == H2_GOAWAY) {
			conn_fail(c, FAIL_IO, "GOAWAY from the server");
			return -1;
		} else if (type == H2_RST && s) {
			if (answered(c, s, false, false))
				return -1;
			continue;
		} else if (type == H2_DATA) {
			size_t pad = 0, skip = 0;
			if (flags & H2_PADDED) {
				pad = len ? payload[0] : 0;
				skip = 1;
			}
			size_t n = len >= skip + pad ? len - skip - pad : 0;
			if (s && s->len + n <= sizeof(s->answer)) {
				memcpy(s->answer + s->len, payload + skip, n);
				s->len += n;
			}
			c->rx_data += len;
		}
		if (s && (type == H2_DATA || type == H2_HEADERS) && (flags & H2_END_STREAM)) {
			bool ok = s->len >= 12 && (s->answer[2] & 0x80);
			if (answered(c, s, ok, ok && (s->answer[3] & 0x0f) == 0))
				return -1;
		}
	}
	if (c->rx_data >= H2_TOP_UP) {
		uint8_t wu[13];
		frame_header(wu, 4, H2_WINDOW, 0, 0);
		uint32_t inc = (uint32_t)c->rx_data;
		wu[9] = (uint8_t)(inc >> 24);
		wu[10] = (uint8_t)(inc >> 16);
		wu[11] = (uint8_t)(inc >> 8);
		wu[12] = (uint8_t)inc;
		queue_out(c, wu, sizeof(wu));
		c->rx_data = 0;
	}
	memmove(c->in, c->in + off, c->in_len - off);
	c->in_len -= off;
	return 0;
}

static void conn_io(struct conn *c)
{
	if (flush(c) < 0) {
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
				  e == SSL_ERROR_ZERO_RETURN ? "closed by the server"
				  : e == SSL_ERROR_SYSCALL   ? "connection reset or EOF"
							     : "read");
			return;
		}
		c->in_len += (size_t)n;
		int rc = c->w->cfg->mode == MODE_DOT ? parse_dot(c) : parse_doh(c);
		if (rc < 0)
			return;
		fill_window(c);
		if (flush(c) < 0) {
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
		start_session(c);
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
		uint64_t now = now_ns(), wait_ms = 100;
		for (int i = 0; i < w->nconns; i++) {
			struct conn *c = &w->conns[i];
			if (c->state != CONN_FREE)
				continue;
			if (now >= c->retry_at)
				conn_start(c); /* the next connection */
			else
				wait_ms = 10;
		}
		uint64_t left_ms = (until - now_ns()) / 1000000 + 1;
		if (left_ms < wait_ms)
			wait_ms = left_ms;
		int n = epoll_wait(w->epfd, evs, 64, (int)wait_ms);
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
	 * not counted. Every mode waits for the other threads before timing. */
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
			conn_end(&w->conns[i], false); /* in flight at the deadline */
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
	fprintf(stderr, "usage: tlsload -p PORT [-a ADDR] [-m dot|doh] [-r | -k WINDOW] [-c CONNS]"
			" [-T THREADS] [-l SECONDS] [-s SNI] [-u PATH] [-d FILE | -n QNAME]\n");
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

static void print_json_string(const char *s)
{
	putchar('"');
	for (; *s; s++)
		if (*s != '"' && *s != '\\' && (unsigned char)*s >= 0x20)
			putchar(*s);
	putchar('"');
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
	while ((opt = getopt(argc, argv, "a:p:m:rk:c:T:l:s:u:n:d:")) != -1) {
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
		case 'k':
			cfg.window = (unsigned)strtoul(optarg, NULL, 10);
			if (cfg.window < 1 || cfg.window > MAX_WINDOW)
				usage();
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
		case 'd':
			cfg.names_file = optarg;
			break;
		default:
			usage();
		}
	}
	if (port <= 0 || port > 65535 || cfg.threads < 1 || cfg.conns < cfg.threads ||
	    cfg.conns > MAX_CONNS || cfg.seconds <= 0 || (cfg.resume && cfg.window) ||
	    strlen(cfg.path) >= 200 || (cfg.sni && strlen(cfg.sni) >= 200))
		usage();
	cfg.addr.sin_port = htons((uint16_t)port);
	int rc = load_questions(&cfg);
	if (rc < 0) {
		fprintf(stderr, "tlsload: %s: %s\n", cfg.names_file ? cfg.names_file : cfg.qname,
			strerror(-rc));
		return 2;
	}
	conn_ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);

	struct worker *ws = calloc((size_t)cfg.threads, sizeof(*ws));
	if (!ws)
		return 2;
	pthread_barrier_init(&barrier, NULL, (unsigned)cfg.threads);
	unsigned nslots = cfg.window ? cfg.window : 1;
	for (int t = 0; t < cfg.threads; t++) {
		struct worker *w = &ws[t];
		w->cfg = &cfg;
		w->nconns = cfg.conns / cfg.threads + (t < cfg.conns % cfg.threads);
		w->nconns_all = w->nconns;
		w->next_name = nquestions * (size_t)t / (size_t)cfg.threads;
		w->conns = calloc((size_t)w->nconns, sizeof(*w->conns));
		w->ctx = client_ctx(&cfg);
		w->epfd = epoll_create1(EPOLL_CLOEXEC);
		if (!w->conns || !w->ctx || w->epfd < 0) {
			fprintf(stderr, "tlsload: cannot set up thread %d\n", t);
			return 2;
		}
		for (int i = 0; i < w->nconns; i++) {
			struct conn *c = &w->conns[i];
			c->w = w;
			c->fd = -1;
			c->nslots = nslots;
			c->slots = calloc(nslots, sizeof(*c->slots));
			c->out = malloc(OUT_MAX);
			if (!c->slots || !c->out)
				return 2;
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
	uint64_t completed = 0, resumed = 0, noerror = 0, tickets = 0, answers = 0,
		 answers_noerror = 0, opened = 0, failed[FAIL_N] = { 0 };
	size_t nlat = 0;
	for (int t = 0; t < cfg.threads; t++) {
		completed += ws[t].completed;
		resumed += ws[t].resumed;
		noerror += ws[t].noerror;
		tickets += ws[t].tickets;
		answers += ws[t].answers;
		answers_noerror += ws[t].answers_noerror;
		opened += ws[t].opened;
		for (int f = 0; f < FAIL_N; f++)
			failed[f] += ws[t].failed[f];
		nlat += ws[t].nlat;
	}
	double *hs = malloc((nlat + 1) * sizeof(double));
	double *total = malloc((nlat + 1) * sizeof(double));
	if (!hs || !total)
		return 2;
	size_t k = 0;
	for (int t = 0; t < cfg.threads; t++) {
		if (ws[t].nlat) {
			memcpy(hs + k, ws[t].hs_ms, ws[t].nlat * sizeof(double));
			memcpy(total + k, ws[t].conn_ms, ws[t].nlat * sizeof(double));
		}
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

	printf("{\"mode\": \"%s\", \"load\": \"%s\", \"resume\": %s, \"window\": %u, "
	       "\"threads\": %d, \"concurrency\": %d, \"seconds\": %.3f, \"names\": %zu, "
	       "\"completed\": %llu, \"rate\": %.1f, \"resumed\": %llu, \"noerror\": %llu, "
	       "\"tickets\": %llu, \"answers\": %llu, \"answers_noerror\": %llu, \"qps\": %.1f, "
	       "\"connections_opened\": %llu, \"failed\": {",
	       cfg.mode == MODE_DOT ? "dot" : "doh", cfg.window ? "queries" : "connections",
	       cfg.resume ? "true" : "false", cfg.window, cfg.threads, cfg.conns, cfg.seconds,
	       nquestions, (unsigned long long)completed, (double)completed / cfg.seconds,
	       (unsigned long long)resumed, (unsigned long long)noerror,
	       (unsigned long long)tickets, (unsigned long long)answers,
	       (unsigned long long)answers_noerror, (double)answers_noerror / cfg.seconds,
	       (unsigned long long)opened);
	for (int f = 0; f < FAIL_N; f++)
		printf("%s\"%s\": %llu", f ? ", " : "", fail_names[f],
		       (unsigned long long)failed[f]);
	printf("}, \"first_error\": ");
	print_json_string(first_error);
	printf(", \"handshake_ms\": {\"p50\": %.3f, \"p99\": %.3f}, "
	       "\"connection_ms\": {\"p50\": %.3f, \"p99\": %.3f}, \"tls\": {\"version\": ",
	       percentile(hs, nlat, 50), percentile(hs, nlat, 99), percentile(total, nlat, 50),
	       percentile(total, nlat, 99));
	print_json_string(first->version);
	printf(", \"cipher\": ");
	print_json_string(first->cipher);
	printf(", \"group\": ");
	print_json_string(first->group);
	printf(", \"alpn\": ");
	print_json_string(first->alpn);
	printf("}, \"client_cpu_s\": %.3f, \"wall_s\": %.3f}\n", cpu, wall);
	return 0;
}
