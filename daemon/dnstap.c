/*
 * dnstap output.  Workers encode; libfstrm's I/O thread (fstrm_iothr)
 * writes.  The pieces, and why:
 *
 * - One fstrm input queue per worker (SPSC): fstrm_iothr_submit() never
 *   blocks; a full queue is a drop, counted.
 * - One ring buffer per worker holds the encoded events until fstrm has
 *   written (or discarded) them, so that no event costs a malloc.  fstrm
 *   gives each one back through free_cb(), on its thread, in whatever
 *   order; the ring's tail moves over every slot given back.
 * - Our own fstrm_rdwr over a unix socket instead of fstrm_unix_writer:
 *   its writes wait for a stopped receiver in slices and give up once
 *   dnstap_stop() has waited STOP_GRACE_MS (fstrm's would block the exit
 *   forever), its reads time out during the handshake, and it tells the
 *   workers whether anyone listens (receiver_up) and the counters whether
 *   what fstrm gives back was written (io.ok): fstrm discards silently what
 *   comes while the stream is closed.
 */
#include "daemon/dnstap.h"

#include "lib/dnstap.h"
#include "lib/doh.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/version.h"
#include "lib/wire.h"

#include <errno.h>
#include <fstrm.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

enum {
	QUEUE_SIZE = 4096,		   /* events per worker queue (a power of 2) */
	NOTIFY_THRESHOLD = QUEUE_SIZE / 2, /* fstrm wakes its thread at this much room left */
	RING_BYTES = 2 << 20,		   /* encoded events per worker not yet written */
	SLOT_ALIGN = 16,
	HANDSHAKE_MS = 2000,  /* a receiver that does not answer READY within this is not one */
	STOP_GRACE_MS = 1000, /* what is queued at exit gets this long to be written */
	WAIT_SLICE_MS = 100,  /* a blocked write looks at the clock this often */
	FIRST_TRY_MS = 1000,  /* start-up waits this long at most for the first connect() */
	ID_COPY_BYTES = WIRE_MAX_MSG + DOH_QUERY_SLACK,
};

static const char content_type[] = "protobuf:dnstap.Dnstap";

/* The head of each event in a ring.  @size: the bytes it takes from its
 * start, its own head included; a pad slot (done from the start) fills
 * the end of the ring when the next event does not fit there. */
struct slot {
	uint32_t size;
	uint32_t done; /* given back by fstrm; written by the freeing thread only */
	uint8_t pad[SLOT_ALIGN - 8];
};

struct dnstap_queue {
	struct fstrm_iothr_queue *ioq;
	uint64_t *counters; /* the worker's (metrics_mine) */
	uint8_t *ring;
	size_t head;	   /* bytes ever handed out; the worker's, read by the freer */
	size_t tail;	   /* bytes ever given back; the freer's, read by the worker */
	uint64_t query_ns; /* wall-clock time of this worker's last CLIENT_QUERY */
	uint8_t *id_copy;  /* ID_COPY_BYTES: a forwarder query as it goes on the wire */
};

/* The unix socket, used by fstrm's thread only (and by dnstap_stop() once
 * that thread has ended). */
struct io {
	struct sockaddr_un sa;
	int fd;
	bool ok;	/* connected, no write failed since: what is written counts as sent */
	bool told_down; /* the log says it is down */
	bool ever_up;
	char why[128]; /* why the last connection ended */
};

bool dnstap_on;
static bool receiver_up;	  /* set by fstrm's thread, read by the workers */
static bool tried_once;		  /* fstrm's thread tried to connect once: start-up may go on */
static uint64_t stop_deadline_ms; /* 0, or when dnstap_stop() stops waiting */
static struct fstrm_iothr *iothr;
static struct dnstap_queue *queues;
static unsigned n_queues;
static struct io io = { .fd = -1 };
static char identity[256], version[64];
static _Thread_local struct dnstap_queue *mine;

static uint64_t now_ms(void)
{
	return uv_hrtime() / 1000000u;
}

static uint64_t wall_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Wall-clock time of the uv_hrtime() @mono, which is in the past. */
static uint64_t wall_of(uint64_t mono)
{
	uint64_t now = uv_hrtime();
	uint64_t wall = wall_ns();

	return mono && mono <= now && now - mono < wall ? wall - (now - mono) : wall;
}

static void count(uint64_t *counters, enum metric m)
{
	uint64_t *c = &counters[m];

	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
}

/* -- the ring ----------------------------------------------------------------------- */

static size_t slot_bytes(size_t len)
{
	return (sizeof(struct slot) + len + SLOT_ALIGN - 1) & ~(size_t)(SLOT_ALIGN - 1);
}

/* Room for an event of up to @len bytes: where to encode it, and how many
 * bytes of padding must precede it (*@pad); NULL when the ring is full. */
static uint8_t *ring_reserve(struct dnstap_queue *q, size_t len, size_t *pad)
{
	size_t need = slot_bytes(len);
	size_t off = q->head % RING_BYTES;
	size_t used = q->head - __atomic_load_n(&q->tail, __ATOMIC_ACQUIRE);

	*pad = off + need > RING_BYTES ? RING_BYTES - off : 0;
	if (used + *pad + need > RING_BYTES)
		return NULL;
	return q->ring + (*pad ? 0 : off) + sizeof(struct slot);
}

/* Write the heads of an event of @len bytes reserved with @pad. */
static void ring_write_heads(struct dnstap_queue *q, size_t pad, size_t len)
{
	size_t off = q->head % RING_BYTES;

	if (pad) {
		struct slot *p = (struct slot *)(q->ring + off);
		p->size = (uint32_t)pad;
		p->done = 1;
		off = 0;
	}
	struct slot *s = (struct slot *)(q->ring + off);
	s->size = (uint32_t)slot_bytes(len);
	s->done = 0;
}

/* The event is fstrm's now: the freer may walk over it once it is given back. */
static void ring_publish(struct dnstap_queue *q, size_t pad, size_t len)
{
	__atomic_store_n(&q->head, q->head + pad + slot_bytes(len), __ATOMIC_RELEASE);
}

/* fstrm is done with @data (written, or discarded): on its thread, or on
 * the one in dnstap_stop() once that thread has ended. */
static void free_cb(void *data, void *arg)
{
	struct dnstap_queue *q = arg;
	struct slot *s = (struct slot *)((uint8_t *)data - sizeof(struct slot));

	count(q->counters, io.ok ? METRIC_dnstap_sent : METRIC_dnstap_lost);
	s->done = 1;
	size_t head = __atomic_load_n(&q->head, __ATOMIC_ACQUIRE);
	size_t tail = q->tail;
	while (tail != head) {
		struct slot *t = (struct slot *)(q->ring + tail % RING_BYTES);
		if (!t->done)
			break;
		t->done = 0;
		tail += t->size;
	}
	__atomic_store_n(&q->tail, tail, __ATOMIC_RELEASE);
}

/* -- events ------------------------------------------------------------------------- */

static void emit(struct dnstap_queue *q, struct dnstap_event *ev)
{
	size_t pad;

	ev->identity = identity;
	ev->version = version;
	size_t bound = dnstap_size_bound(ev);
	uint8_t *buf = ring_reserve(q, bound, &pad);
	if (!buf) {
		count(q->counters, METRIC_dnstap_dropped);
		return;
	}
	size_t len = dnstap_encode(ev, buf, bound);
	require(len <= bound);
	ring_write_heads(q, pad, len);
	if (fstrm_iothr_submit(iothr, q->ioq, buf, len, free_cb, q) != fstrm_res_success) {
		count(q->counters, METRIC_dnstap_dropped);
		return; /* the heads are rewritten by the next event */
	}
	ring_publish(q, pad, len);
}

/* The queue of this worker, if anyone listens; counts a drop otherwise. */
static struct dnstap_queue *listening(void)
{
	struct dnstap_queue *q = mine;

	if (q && !__atomic_load_n(&receiver_up, __ATOMIC_RELAXED)) {
		count(q->counters, METRIC_dnstap_dropped);
		return NULL;
	}
	return q;
}

static void client_event(enum dnstap_type type, const struct frontend_client *c,
			 struct dnstap_event *ev)
{
	struct frontend_origin o = { 0 };

	if (c->ops->origin)
		c->ops->origin(c, &o);
	ev->type = type;
	ev->protocol = dnstap_protocol_of(o.protocol);
	ev->query_addr = o.client;
	ev->response_addr = o.local;
}

void dnstap_send_client_query(const struct frontend_client *c, const uint8_t *msg, size_t len)
{
	uint64_t now = wall_ns();

	if (mine)
		mine->query_ns = now;
	struct dnstap_queue *q = listening();
	if (!q)
		return;
	struct dnstap_event ev = { .query_time_ns = now, .query = msg, .query_len = len };
	client_event(DNSTAP_CLIENT_QUERY, c, &ev);
	emit(q, &ev);
}

void dnstap_send_client_response(const struct frontend_client *c, const uint8_t *msg, size_t len,
				 uint64_t query_ns)
{
	struct dnstap_queue *q = listening();

	if (!q)
		return;
	uint64_t now = wall_ns();
	struct dnstap_event ev = {
		.query_time_ns = query_ns ? wall_of(query_ns) : q->query_ns,
		.response_time_ns = now,
		.response = msg,
		.response_len = len,
	};
	client_event(DNSTAP_CLIENT_RESPONSE, c, &ev);
	emit(q, &ev);
}

/*
 * The query @msg as the transport puts it on the wire, into @out
 * (ID_COPY_BYTES): DoT sends it with its key as the ID (dot.c); plain DNS
 * with its key as the ID and without our hop's EDNS options (plain.c); DoH
 * rebuilt by doh_make_query() (doh.c), padded when the query was.  Kept in
 * step with those files: test_dnstap.py compares each with what a server
 * received, byte for byte.
 */
static size_t wire_form(enum dnstap_protocol protocol, const uint8_t *msg, size_t len, uint32_t key,
			uint8_t *out)
{
	struct wire_info info;

	if (protocol == DNSTAP_DOH) {
		bool pad = wire_parse(msg, len, &info) == 0 && info.has_padding;
		size_t n = doh_make_query(msg, len, pad, out, ID_COPY_BYTES);
		if (n)
			return n;
		key = 0; /* cannot be: doh.c sends nothing it could not rebuild */
	}
	memcpy(out, msg, len);
	if (protocol == DNSTAP_UDP && wire_parse(out, len, &info) == 0)
		len = wire_filter_opt(out, len, &info);
	wire_set_id(out, (uint16_t)key);
	return len;
}

void dnstap_send_forwarder_query(const char *transport, const struct sockaddr *server,
				 const uint8_t *msg, size_t len, uint32_t key)
{
	struct dnstap_queue *q = listening();

	if (!q || len < WIRE_HEADER_LEN || len > WIRE_MAX_MSG)
		return;
	enum dnstap_protocol protocol = dnstap_protocol_of(transport);
	len = wire_form(protocol, msg, len, key, q->id_copy);
	struct dnstap_event ev = {
		.type = DNSTAP_FORWARDER_QUERY,
		.protocol = protocol,
		.response_addr = server,
		.query_time_ns = wall_ns(),
		.query = q->id_copy,
		.query_len = len,
	};
	emit(q, &ev);
}

void dnstap_send_forwarder_response(const char *transport, const struct sockaddr *server,
				    const uint8_t *msg, size_t len, uint64_t sent_ns)
{
	struct dnstap_queue *q = listening();

	if (!q)
		return;
	struct dnstap_event ev = {
		.type = DNSTAP_FORWARDER_RESPONSE,
		.protocol = dnstap_protocol_of(transport),
		.response_addr = server,
		.query_time_ns = wall_of(sent_ns),
		.response_time_ns = wall_ns(),
		.response = msg,
		.response_len = len,
	};
	emit(q, &ev);
}

/* -- the socket, on fstrm's thread ---------------------------------------------------- */

static void set_up(bool up)
{
	__atomic_store_n(&receiver_up, up, __ATOMIC_RELAXED);
}

static bool stopping_over(void)
{
	uint64_t deadline = __atomic_load_n(&stop_deadline_ms, __ATOMIC_RELAXED);

	return deadline && now_ms() >= deadline;
}

static void went_down(const char *what, int error)
{
	snprintf(io.why, sizeof(io.why), "%s: %s", what, error ? strerror(error) : "closed");
	if (io.told_down || __atomic_load_n(&stop_deadline_ms, __ATOMIC_RELAXED))
		return;
	io.told_down = true;
	log_warn("dnstap: %s %s (%s); events are dropped until it listens, tried every %d s",
		 io.ever_up ? "lost" : "cannot reach", io.sa.sun_path, io.why, DNSTAP_REOPEN_S);
}

static void drop_fd(void)
{
	if (io.fd >= 0)
		close(io.fd);
	io.fd = -1;
	io.ok = false;
	set_up(false);
}

/* Wait until @fd is ready for @events; false on a timeout (@ms, or the
 * stop deadline) or an error. */
static bool wait_fd(short events, int ms)
{
	uint64_t until = ms >= 0 ? now_ms() + (uint64_t)ms : 0;

	for (;;) {
		struct pollfd p = { .fd = io.fd, .events = events };
		int rc = poll(&p, 1, WAIT_SLICE_MS);
		if (rc > 0)
			return true;
		if (rc < 0 && errno != EINTR)
			return false;
		if (stopping_over() || (until && now_ms() >= until)) {
			errno = ETIMEDOUT;
			return false;
		}
	}
}

static fstrm_res op_open(void *obj)
{
	(void)obj;
	if (io.fd >= 0) {
		/* The last handshake failed without a read or write failing: the
		 * receiver did not accept our content type. */
		drop_fd();
		went_down("handshake", EPROTO);
	}
	io.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (io.fd < 0) {
		went_down("socket", errno);
	} else if (connect(io.fd, (struct sockaddr *)&io.sa, sizeof(io.sa)) < 0) {
		int e = errno;
		drop_fd();
		went_down("connect", e);
	} else {
		io.ok = true;
		set_up(true);
	}
	__atomic_store_n(&tried_once, true, __ATOMIC_RELEASE);
	return io.fd >= 0 ? fstrm_res_success : fstrm_res_failure;
}

static fstrm_res op_close(void *obj)
{
	(void)obj;
	drop_fd();
	return fstrm_res_success;
}

static fstrm_res op_read(void *obj, void *data, size_t len)
{
	uint8_t *p = data;

	(void)obj;
	while (len > 0) {
		ssize_t n = read(io.fd, p, len);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n == 0) {
			went_down("read", 0);
			return fstrm_res_failure;
		}
		if ((errno != EAGAIN && errno != EINTR) || !wait_fd(POLLIN, HANDSHAKE_MS)) {
			went_down("read", errno);
			return fstrm_res_failure;
		}
	}
	return fstrm_res_success;
}

static fstrm_res op_write(void *obj, const struct iovec *iov, int iovcnt)
{
	enum { WINDOW = 64 };
	struct iovec win[WINDOW];
	size_t i = 0, off = 0; /* the first byte not written: in iov[i], at off */
	/* Data frames start with their length, control frames with 0. */
	bool data =
	    iovcnt > 0 && iov[0].iov_len == 4 && memcmp(iov[0].iov_base, "\0\0\0\0", 4) != 0;

	(void)obj;
	while (i < (size_t)iovcnt) {
		struct msghdr mh = { .msg_iov = win };
		for (size_t j = i; j < (size_t)iovcnt && mh.msg_iovlen < WINDOW; j++)
			win[mh.msg_iovlen++] = iov[j];
		win[0].iov_base = (uint8_t *)win[0].iov_base + off;
		win[0].iov_len -= off;
		ssize_t n = sendmsg(io.fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if ((errno != EAGAIN && errno != EINTR) || !wait_fd(POLLOUT, -1)) {
				int e = errno;
				io.ok = false;
				went_down("write", e);
				return fstrm_res_failure;
			}
			continue;
		}
		for (size_t left = (size_t)n; left > 0;) {
			size_t rest = iov[i].iov_len - off;
			if (left < rest) {
				off += left;
				break;
			}
			left -= rest;
			i++;
			off = 0;
		}
		while (i < (size_t)iovcnt && iov[i].iov_len == off) { /* empty, or done */
			i++;
			off = 0;
		}
	}
	if (data && (io.told_down || !io.ever_up)) {
		log_tagged("notice", "dnstap: streaming to %s", io.sa.sun_path);
		io.told_down = false;
		io.ever_up = true;
	}
	return fstrm_res_success;
}

static fstrm_res op_destroy(void *obj)
{
	(void)obj;
	drop_fd();
	return fstrm_res_success;
}

/* -- start and stop ------------------------------------------------------------------- */

static struct fstrm_writer *new_writer(void)
{
	struct fstrm_rdwr *rdwr = fstrm_rdwr_init(NULL);
	struct fstrm_writer_options *wopt = fstrm_writer_options_init();
	struct fstrm_writer *w = NULL;

	if (rdwr && wopt &&
	    fstrm_writer_options_add_content_type(wopt, content_type, sizeof(content_type) - 1) ==
		fstrm_res_success) {
		fstrm_rdwr_set_open(rdwr, op_open);
		fstrm_rdwr_set_close(rdwr, op_close);
		fstrm_rdwr_set_read(rdwr, op_read); /* a read op: the handshake is bidirectional */
		fstrm_rdwr_set_write(rdwr, op_write);
		fstrm_rdwr_set_destroy(rdwr, op_destroy);
		w = fstrm_writer_init(wopt, &rdwr); /* takes rdwr: NULL then */
	}
	if (rdwr)
		fstrm_rdwr_destroy(&rdwr);
	if (wopt)
		fstrm_writer_options_destroy(&wopt);
	return w;
}

static struct fstrm_iothr *new_iothr(unsigned workers, struct fstrm_writer **w)
{
	struct fstrm_iothr_options *opt = fstrm_iothr_options_init();
	struct fstrm_iothr *t = NULL;

	if (opt && fstrm_iothr_options_set_num_input_queues(opt, workers) == fstrm_res_success &&
	    fstrm_iothr_options_set_queue_model(opt, FSTRM_IOTHR_QUEUE_MODEL_SPSC) ==
		fstrm_res_success &&
	    fstrm_iothr_options_set_input_queue_size(opt, QUEUE_SIZE) == fstrm_res_success &&
	    fstrm_iothr_options_set_queue_notify_threshold(opt, NOTIFY_THRESHOLD) ==
		fstrm_res_success &&
	    fstrm_iothr_options_set_reopen_interval(opt, DNSTAP_REOPEN_S) == fstrm_res_success)
		t = fstrm_iothr_init(opt, w);
	if (opt)
		fstrm_iothr_options_destroy(&opt);
	return t;
}

static void free_queues(void)
{
	for (unsigned i = 0; i < n_queues; i++) {
		free(queues[i].ring);
		free(queues[i].id_copy);
	}
	free(queues);
	queues = NULL;
	n_queues = 0;
}

int dnstap_start(const struct config *cfg, unsigned workers, char *err, size_t errlen)
{
	if (!cfg->dnstap[0])
		return 0;
	if (cfg->dnstap_identity[0])
		snprintf(identity, sizeof(identity), "%s", cfg->dnstap_identity);
	else if (gethostname(identity, sizeof(identity) - 1) < 0)
		snprintf(identity, sizeof(identity), "dotproxy");
	snprintf(version, sizeof(version), "dotproxy %s", DOTPROXY_VERSION);
	memset(&io.sa, 0, sizeof(io.sa));
	io.sa.sun_family = AF_UNIX;
	snprintf(io.sa.sun_path, sizeof(io.sa.sun_path), "%s", cfg->dnstap);

	queues = calloc(workers, sizeof(*queues));
	if (!queues)
		goto nomem;
	n_queues = workers;
	for (unsigned i = 0; i < workers; i++) {
		/* Pages of the ring are touched only as events fill it. */
		queues[i].ring = malloc(RING_BYTES);
		queues[i].id_copy = malloc(ID_COPY_BYTES);
		if (!queues[i].ring || !queues[i].id_copy)
			goto nomem;
	}
	struct fstrm_writer *w = new_writer();
	if (!w) {
		snprintf(err, errlen, "cannot set up a Frame Streams writer");
		free_queues();
		return -ENOMEM;
	}
	iothr = new_iothr(workers, &w);
	if (!iothr) {
		fstrm_writer_destroy(&w);
		snprintf(err, errlen, "cannot start the Frame Streams I/O thread");
		free_queues();
		return -ENOMEM;
	}
	for (unsigned i = 0; i < workers; i++) {
		queues[i].ioq = fstrm_iothr_get_input_queue_idx(iothr, i);
		require(queues[i].ioq);
	}
	/* A receiver that listens gets the first query's events: they are
	 * queued once the connection is there, which takes no time. */
	for (unsigned ms = 0; ms < FIRST_TRY_MS && !__atomic_load_n(&tried_once, __ATOMIC_ACQUIRE);
	     ms++)
		uv_sleep(1);
	dnstap_on = true;
	log_info("dnstap: to %s as \"%s\", %s", io.sa.sun_path, identity, version);
	return 0;
nomem:
	free_queues();
	snprintf(err, errlen, "out of memory");
	return -ENOMEM;
}

void dnstap_use_worker(unsigned index)
{
	if (!dnstap_on || index >= n_queues)
		return;
	mine = &queues[index];
	mine->counters = metrics_mine;
}

void dnstap_stop(void)
{
	if (!iothr)
		return;
	__atomic_store_n(&stop_deadline_ms, now_ms() + STOP_GRACE_MS, __ATOMIC_RELAXED);
	fstrm_iothr_destroy(&iothr); /* writes what it can, then joins its thread */
	dnstap_on = false;
	mine = NULL;
	free_queues();
}
