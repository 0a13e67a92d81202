/*
 * Upstream names through --bootstrap: for each name, one round of two
 * exchanges (A and AAAA) over connected UDP sockets, each with a random ID
 * and the random source port connect(2) picks; an answer counts only from
 * that server, with that ID and that question (RFC 5452 §9.1).  A round
 * ends when both have answered, BOOTSTRAP_AAAA_WAIT_MS after the A answer
 * came with addresses (a server that drops AAAA questions does not hold the
 * name up for long), or at BOOTSTRAP_TIMEOUT_MS.  It keeps every address
 * that came, up to the caps: the A addresses first, then the AAAA, each in
 * the server's order, so that the upstream layer has another address to
 * try when one cannot be reached; the TTL is the least along the answers.
 * A truncated answer is a failure: the round is retried later, which does
 * for names whose A and AAAA sets fit 512 bytes, i.e. every resolver's
 * name we know of.
 */
#include "daemon/bootstrap.h"

#include "lib/log.h"
#include "lib/random.h"
#include "lib/wire.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum {
	MAX_NAMES = OPTIONS_MAX_UPSTREAMS + OPTIONS_MAX_ZONES * OPTIONS_MAX_ZONE_UPSTREAMS,
	ANSWER_MAX = 1500, /* we send no EDNS: 512 bytes, and room for a server that ignores that */
	TYPE_A = 1,
	TYPE_CNAME = 5,
	TYPE_AAAA = 28,
	CLASS_IN = 1,
};

struct name;

/* One question to one server; freed in its socket's close callback. */
struct exchange {
	struct name *n; /* NULL once the round dropped it */
	bool has_udp;	/* udp is open (--bootstrap); else the query went inward */
	uv_udp_t udp;
	uint16_t id;
	uint16_t qtype;
	bool done;	  /* answered (or failed for good this round) */
	uint32_t ttl;	  /* the least TTL along the answer */
	unsigned n_addrs; /* addresses of qtype in the answer, kept up to the cap */
	struct sockaddr_storage addrs[BOOTSTRAP_MAX_PER_FAMILY]; /* port 0, in order */
	char why[96];						 /* a failure, for the log */
	uint8_t buf[ANSWER_MAX];
};

enum name_state {
	NAME_IDLE,   /* the timer runs until the next round */
	NAME_ASKING, /* a round is out; the timer is its deadline */
};

struct name {
	struct bootstrap *b;
	char text[OPTIONS_MAX_AUTH_NAME + 1];
	uint8_t wire[WIRE_MAX_NAME];
	size_t wire_len;
	enum name_state state;
	uv_timer_t timer;
	struct exchange *x[2];				    /* A, AAAA; NULL when not out */
	unsigned n_addrs;				    /* addresses known (0: none yet) */
	struct sockaddr_storage addrs[BOOTSTRAP_MAX_ADDRS]; /* A first, then AAAA; port 0 */
	uint64_t expires_ms; /* uv_now() when the TTL of addrs runs out */
	unsigned failures;   /* rounds in a row without an address */
	bool sending;	     /* ask() is sending: the round cannot end yet */
	unsigned server;     /* which --bootstrap server the next round asks */
};

struct bootstrap {
	struct loop *loop;
	const struct config *cfg;
	bootstrap_cb cb;
	bootstrap_send_fn send; /* without --bootstrap: inward, through the query core */
	void *arg;
	unsigned closing; /* timers still closing in bootstrap_free() */
	unsigned n;
	struct name names[MAX_NAMES];
};

static void timer_cb(uv_timer_t *timer);

static void exchange_closed_cb(uv_handle_t *handle)
{
	free(handle->data);
}

static void drop_exchange(struct name *n, unsigned i)
{
	struct exchange *x = n->x[i];

	if (!x)
		return;
	n->x[i] = NULL;
	x->n = NULL;
	if (x->has_udp)
		uv_close((uv_handle_t *)&x->udp, exchange_closed_cb);
	else
		free(x);
}

static const char *server_text(const struct name *n, unsigned server)
{
	const struct config *cfg = n->b->cfg;

	if (!cfg->n_bootstrap)
		return "the upstreams given by address";
	return cfg->bootstrap[server % cfg->n_bootstrap].text;
}

/* The round is over: take what it found, or count a failure. */
static void finish_round(struct name *n)
{
	struct sockaddr_storage addrs[BOOTSTRAP_MAX_ADDRS];
	unsigned n_addrs = 0, n_v4 = 0;
	uint32_t ttl = UINT32_MAX;
	char why[128] = "no answer";
	unsigned asked = n->server;

	/* x[0] is the A question: its addresses come first. */
	for (unsigned i = 0; i < 2; i++) {
		const struct exchange *x = n->x[i];
		if (x && x->n_addrs) {
			memcpy(addrs + n_addrs, x->addrs, x->n_addrs * sizeof(addrs[0]));
			n_addrs += x->n_addrs;
			if (i == 0)
				n_v4 = x->n_addrs;
			if (x->ttl < ttl)
				ttl = x->ttl;
		}
		if (x && x->why[0])
			snprintf(why, sizeof(why), "%s", x->why);
	}
	n->state = NAME_IDLE;
	if (n_addrs) {
		if (ttl < BOOTSTRAP_MIN_TTL)
			ttl = BOOTSTRAP_MIN_TTL;
		if (ttl > BOOTSTRAP_MAX_TTL)
			ttl = BOOTSTRAP_MAX_TTL;
		if (n->failures)
			log_tagged("notice", "bootstrap: %s resolves again", n->text);
		n->failures = 0;
		memcpy(n->addrs, addrs, n_addrs * sizeof(addrs[0]));
		n->n_addrs = n_addrs;
		n->expires_ms = uv_now(&n->b->loop->uv) + ttl * 1000ull;
		log_debug("bootstrap: %s has %u IPv4 and %u IPv6 addresses for %u s", n->text, n_v4,
			  n_addrs - n_v4, ttl);
		drop_exchange(n, 0);
		drop_exchange(n, 1);
		uv_timer_start(&n->timer, timer_cb, ttl * 1000ull, 0);
		n->b->cb(n->b->arg, n->text, n->addrs, n->n_addrs);
		return;
	}
	drop_exchange(n, 0);
	drop_exchange(n, 1);
	n->failures++;
	n->server++; /* the next round asks the next server */
	unsigned shift = n->failures - 1 < 6 ? n->failures - 1 : 6;
	uint64_t ms = (uint64_t)BOOTSTRAP_RETRY_MIN_MS << shift;
	if (ms > BOOTSTRAP_RETRY_MAX_MS)
		ms = BOOTSTRAP_RETRY_MAX_MS;
	if (n->failures == 1)
		log_warn("bootstrap: cannot resolve %s through %s: %s; %s, asking again in %llu ms",
			 n->text, server_text(n, asked), why,
			 n->n_addrs ? "keeping its last addresses" : "its upstreams wait for it",
			 (unsigned long long)ms);
	else
		log_info("bootstrap: %s: failure %u in a row through %s: %s; again in %llu ms",
			 n->text, n->failures, server_text(n, asked), why, (unsigned long long)ms);
	uv_timer_start(&n->timer, timer_cb, ms, 0);
}

/* Both answered: the round is over.  Once the A answer came with
 * addresses, the AAAA has BOOTSTRAP_AAAA_WAIT_MS more (the round's timer,
 * shortened), and the round ends without it after that. */
static void maybe_finish(struct name *n)
{
	if (n->sending)
		return;
	for (unsigned i = 0; i < 2; i++) {
		if (n->x[i] && !n->x[i]->done) {
			if (i == 1 && n->x[0] && n->x[0]->n_addrs &&
			    uv_timer_get_due_in(&n->timer) > BOOTSTRAP_AAAA_WAIT_MS)
				uv_timer_start(&n->timer, timer_cb, BOOTSTRAP_AAAA_WAIT_MS, 0);
			return;
		}
	}
	finish_round(n);
}

static void fail_exchange(struct exchange *x, const char *why)
{
	x->done = true;
	snprintf(x->why, sizeof(x->why), "%s", why);
	maybe_finish(x->n);
}

static bool same_name(const uint8_t *a, const uint8_t *b, size_t len)
{
	/* Label lengths are below 64, so tolower() leaves them alone. */
	for (size_t i = 0; i < len; i++)
		if (tolower(a[i]) != tolower(b[i]))
			return false;
	return true;
}

/* Past the (possibly compressed) name at @pos; 0 if it runs out. */
static size_t skip_name(const uint8_t *msg, size_t len, size_t pos)
{
	while (pos < len) {
		uint8_t c = msg[pos];
		if ((c & 0xc0) == 0xc0)
			return pos + 2 <= len ? pos + 2 : 0;
		if (c == 0)
			return pos + 1;
		pos += 1u + c;
	}
	return 0;
}

/* Take the addresses of x->qtype from the answer section, in order, up to
 * the cap (a repeated one once). */
static void read_answer(struct exchange *x, const uint8_t *msg, size_t len,
			const struct wire_info *info)
{
	size_t pos = info->question_end;
	uint32_t least = UINT32_MAX;

	for (unsigned i = 0; i < info->ancount; i++) {
		pos = skip_name(msg, len, pos);
		if (!pos || pos + 10 > len)
			return;
		uint16_t type = wire_read16(msg + pos), class = wire_read16(msg + pos + 2);
		uint32_t ttl =
		    (uint32_t)wire_read16(msg + pos + 4) << 16 | wire_read16(msg + pos + 6);
		uint16_t rdlen = wire_read16(msg + pos + 8);
		const uint8_t *rdata = msg + pos + 10;
		pos += 10u + rdlen;
		if (pos > len)
			return;
		if (class != CLASS_IN || (type != TYPE_CNAME && type != x->qtype))
			continue;
		if (ttl > INT32_MAX)
			ttl = 0; /* RFC 2181 §8 */
		if (ttl < least)
			least = ttl;
		if (x->n_addrs == BOOTSTRAP_MAX_PER_FAMILY || type != x->qtype)
			continue;
		struct sockaddr_storage sa;
		memset(&sa, 0, sizeof(sa));
		if (type == TYPE_A && rdlen == 4) {
			struct sockaddr_in *v4 = (struct sockaddr_in *)&sa;
			v4->sin_family = AF_INET;
			memcpy(&v4->sin_addr, rdata, 4);
		} else if (type == TYPE_AAAA && rdlen == 16) {
			struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&sa;
			v6->sin6_family = AF_INET6;
			memcpy(&v6->sin6_addr, rdata, 16);
		} else {
			continue;
		}
		bool seen = false;
		for (unsigned j = 0; j < x->n_addrs; j++)
			seen |= memcmp(&x->addrs[j], &sa, sizeof(sa)) == 0;
		if (!seen)
			x->addrs[x->n_addrs++] = sa;
	}
	x->ttl = least;
}

static void alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
	struct exchange *x = handle->data;

	(void)suggested;
	*buf = uv_buf_init((char *)x->buf, sizeof(x->buf));
}

/* An answer from where @x's question went: is it the answer to it? */
static bool matches(const struct exchange *x, const uint8_t *msg, size_t len,
		    struct wire_info *info)
{
	return wire_parse(msg, len, info) == 0 && (info->flags & 0x8000) && info->id == x->id &&
	       info->has_question && info->q.qtype == x->qtype && info->q.qclass == CLASS_IN &&
	       info->q.name_len == x->n->wire_len &&
	       same_name(info->q.name, x->n->wire, x->n->wire_len);
}

static void take_answer(struct exchange *x, const uint8_t *msg, size_t len)
{
	struct wire_info info;
	char text[64];

	if (!matches(x, msg, len, &info)) {
		log_debug("bootstrap: %s: an answer that does not match the question, ignored",
			  x->n->text);
		return; /* not ours: keep waiting for the real one */
	}
	if (info.flags & 0x0200) {
		fail_exchange(x, "the answer was truncated");
		return;
	}
	unsigned rcode = info.flags & 0x000f;
	if (rcode != WIRE_RCODE_NOERROR) {
		char rtext[16];
		snprintf(text, sizeof(text), "%s", wire_rcode_to_text(rcode, rtext, sizeof(rtext)));
		fail_exchange(x, text);
		return;
	}
	read_answer(x, msg, len, &info);
	x->done = true;
	if (!x->n_addrs)
		snprintf(x->why, sizeof(x->why), "no address in the answer");
	maybe_finish(x->n);
}

static void recv_cb(uv_udp_t *udp, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *from,
		    unsigned flags)
{
	struct exchange *x = udp->data;
	char text[64];

	(void)buf;
	(void)from; /* connected: the kernel passes only the server's datagrams */
	if (!x->n || x->done || nread == 0)
		return;
	if (nread < 0) {
		snprintf(text, sizeof(text), "%s", uv_strerror((int)nread));
		fail_exchange(x, text);
		return;
	}
	if (flags & UV_UDP_PARTIAL)
		return;
	take_answer(x, x->buf, (size_t)nread);
}

/* One question out to the round's server, or inward (@server NULL); 0 or a
 * negative error.  An inward answer may come back before this returns. */
static int ask_one(struct name *n, unsigned i, const struct options_addr *server)
{
	struct exchange *x = calloc(1, sizeof(*x));
	uint8_t query[WIRE_HEADER_LEN + WIRE_MAX_NAME + 4];
	size_t len = 0;
	int rc;

	require(x);
	x->n = n;
	x->qtype = i == 0 ? TYPE_A : TYPE_AAAA;
	x->id = random_u16();
	memset(query, 0, WIRE_HEADER_LEN);
	wire_write16(query, x->id);
	wire_write16(query + 2, 0x0100); /* RD */
	wire_write16(query + 4, 1);
	len = WIRE_HEADER_LEN;
	memcpy(query + len, n->wire, n->wire_len);
	len += n->wire_len;
	wire_write16(query + len, x->qtype);
	wire_write16(query + len + 2, CLASS_IN);
	len += 4;
	if (!server) {
		n->x[i] = x;
		return n->b->send(n->b->arg, query, len);
	}
	rc = uv_udp_init_ex(&n->b->loop->uv, &x->udp, server->sa.ss_family);
	if (rc < 0) {
		free(x);
		return rc;
	}
	x->udp.data = x;
	x->has_udp = true;
	n->x[i] = x;
	/* connect(2) binds the socket to a port the kernel picks at random. */
	rc = uv_udp_connect(&x->udp, (const struct sockaddr *)&server->sa);
	if (rc == 0)
		rc = uv_udp_recv_start(&x->udp, alloc_cb, recv_cb);
	if (rc == 0) {
		uv_buf_t b = uv_buf_init((char *)query, (unsigned)len);
		rc = uv_udp_try_send(&x->udp, &b, 1, NULL);
		if (rc > 0)
			rc = 0;
	}
	return rc;
}

static void ask(struct name *n)
{
	const struct config *cfg = n->b->cfg;
	const struct options_addr *server =
	    cfg->n_bootstrap ? &cfg->bootstrap[n->server % cfg->n_bootstrap] : NULL;

	n->state = NAME_ASKING;
	uv_timer_start(&n->timer, timer_cb, BOOTSTRAP_TIMEOUT_MS, 0);
	n->sending = true;
	for (unsigned i = 0; i < 2; i++) {
		int rc = ask_one(n, i, server);
		if (rc < 0 && n->x[i]) {
			n->x[i]->done = true;
			snprintf(n->x[i]->why, sizeof(n->x[i]->why), "cannot send: %s",
				 server ? uv_strerror(rc) : strerror(-rc));
		} else if (rc < 0) {
			log_warn("bootstrap: cannot open a UDP socket: %s", uv_strerror(rc));
		}
	}
	n->sending = false;
	if (!n->x[0] && !n->x[1])
		finish_round(n);
	else
		maybe_finish(n);
}

void bootstrap_answer(struct bootstrap *b, const uint8_t *msg, size_t len)
{
	struct wire_info info;

	for (unsigned i = 0; b && i < b->n; i++)
		for (unsigned j = 0; j < 2; j++) {
			struct exchange *x = b->names[i].x[j];
			if (x && !x->has_udp && !x->done && matches(x, msg, len, &info)) {
				take_answer(x, msg, len);
				return;
			}
		}
}

static void timer_cb(uv_timer_t *timer)
{
	struct name *n = timer->data;

	if (n->state == NAME_ASKING)
		finish_round(n); /* the deadline: whatever came in */
	else
		ask(n);
}

static void add_name(struct bootstrap *b, const char *text)
{
	if (!text[0])
		return;
	for (unsigned i = 0; i < b->n; i++)
		if (strcmp(b->names[i].text, text) == 0)
			return;
	require(b->n < MAX_NAMES);
	struct name *n = &b->names[b->n++];
	n->b = b;
	snprintf(n->text, sizeof(n->text), "%s", text);
	n->wire_len = wire_name_from_text(text, n->wire);
	require(n->wire_len > 0);
	uv_timer_init(&b->loop->uv, &n->timer);
	n->timer.data = n;
}

struct bootstrap *bootstrap_new(struct loop *loop, const struct config *cfg, bootstrap_cb cb,
				bootstrap_send_fn send, void *arg, const struct bootstrap *old)
{
	struct bootstrap *b;

	if (!cfg->n_bootstrap && !send)
		return NULL;
	b = calloc(1, sizeof(*b));
	require(b);
	b->loop = loop;
	b->cfg = cfg;
	b->cb = cb;
	b->send = send;
	b->arg = arg;
	for (unsigned i = 0; i < cfg->n_upstream; i++)
		add_name(b, cfg->upstream[i].hostname);
	for (unsigned z = 0; z < cfg->n_zones; z++)
		for (unsigned i = 0; i < cfg->zones[z].n_upstream; i++)
			add_name(b, cfg->zones[z].upstream[i].hostname);
	if (!b->n) {
		free(b);
		return NULL;
	}
	for (unsigned i = 0; i < b->n; i++) {
		struct name *n = &b->names[i];
		for (unsigned j = 0; old && j < old->n; j++) {
			const struct name *o = &old->names[j];
			if (strcmp(o->text, n->text) != 0 || !o->n_addrs)
				continue;
			memcpy(n->addrs, o->addrs, o->n_addrs * sizeof(o->addrs[0]));
			n->n_addrs = o->n_addrs;
			n->expires_ms = o->expires_ms;
		}
	}
	return b;
}

void bootstrap_start(struct bootstrap *b)
{
	uint64_t now = b ? uv_now(&b->loop->uv) : 0;

	for (unsigned i = 0; b && i < b->n; i++) {
		struct name *n = &b->names[i];
		if (n->n_addrs)
			b->cb(b->arg, n->text, n->addrs, n->n_addrs);
		if (n->n_addrs && n->expires_ms > now) {
			n->state = NAME_IDLE;
			uv_timer_start(&n->timer, timer_cb, n->expires_ms - now, 0);
		} else {
			ask(n);
		}
	}
}

static void timer_closed_cb(uv_handle_t *handle)
{
	struct name *n = handle->data;
	struct bootstrap *b = n->b;

	if (--b->closing == 0)
		free(b);
}

void bootstrap_free(struct bootstrap *b)
{
	if (!b)
		return;
	b->closing = b->n;
	for (unsigned i = 0; i < b->n; i++) {
		struct name *n = &b->names[i];
		drop_exchange(n, 0);
		drop_exchange(n, 1);
		uv_close((uv_handle_t *)&n->timer, timer_closed_cb);
	}
}
