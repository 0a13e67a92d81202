/*
 * TLS over a libuv TCP handle.  Reads feed lib/tls; the handshake is driven
 * as ciphertext arrives; writes go out with uv_try_write and only the rest
 * is copied into a write request, behind which everything later queues.
 */
#include "daemon/tlsio.h"

#include "daemon/loop.h"
#include "lib/log.h"
#include "lib/tls.h"

#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>

enum {
	PENDING_MIN = 2048,   /* first buffer of a coalescing stream */
	PENDING_KEEP = 16384, /* a larger one is freed after its flush */
};

struct write_req {
	uv_write_t req;
	struct tlsio *io;
	uint8_t data[];
};

static void tail_flush_cb(struct loop_flush *f);

int tlsio_init(struct tlsio *io, struct loop *loop, const struct tlsio_callbacks *cb)
{
	memset(io, 0, sizeof(*io));
	io->loop = loop;
	io->cb = cb;
	io->flush.cb = tail_flush_cb;
	int rc = uv_tcp_init(&loop->uv, &io->tcp);
	io->tcp.data = io;
	return rc;
}

static void end(struct tlsio *io, enum tlsio_end how, const char *why)
{
	if (io->stopped)
		return;
	io->stopped = true;
	uv_read_stop((uv_stream_t *)&io->tcp);
	io->cb->ended(io, how, why);
}

static void write_cb(uv_write_t *req, int status)
{
	struct write_req *w = (struct write_req *)req;
	struct tlsio *io = w->io;

	free(w);
	if (status < 0 && status != UV_ECANCELED)
		end(io, TLSIO_END_ERROR, uv_strerror(status));
	else if (status == 0 && !io->stopped && io->cb->drained && io->tcp.write_queue_size == 0)
		io->cb->drained(io);
}

/* Send whatever ciphertext the session has produced: uv_try_write first (no
 * copy, no allocation); only what the kernel did not take is copied into a
 * write request, and everything after it queues behind it. */
static int send_cipher(struct tlsio *io)
{
	uint8_t *buf = io->loop->scratch->cipher;
	size_t cap = sizeof(io->loop->scratch->cipher);

	while (tls_conn_out_pending(io->tls) > 0) {
		size_t n = tls_conn_out_take(io->tls, buf, cap);
		uv_buf_t b = uv_buf_init((char *)buf, (unsigned)n);
		int r = io->tcp.write_queue_size ? UV_EAGAIN
						 : uv_try_write((uv_stream_t *)&io->tcp, &b, 1);
		if (r == (int)n)
			continue;
		if (r < 0 && r != UV_EAGAIN)
			return r;
		size_t done = r > 0 ? (size_t)r : 0;
		size_t rest = n - done + tls_conn_out_pending(io->tls);
		struct write_req *w = malloc(sizeof(*w) + rest);
		require(w);
		w->io = io;
		memcpy(w->data, buf + done, n - done);
		size_t len = n - done;
		len += tls_conn_out_take(io->tls, w->data + len, rest - len);
		b = uv_buf_init((char *)w->data, (unsigned)len);
		r = uv_write(&w->req, (uv_stream_t *)&io->tcp, &b, 1, write_cb);
		if (r < 0) {
			free(w);
			return r;
		}
	}
	return 0;
}

/* Output is ready: send it now, or when coalescing at the end of the
 * round, with whatever else the round produces. */
static int push_cipher(struct tlsio *io)
{
	if (!io->coalesce)
		return send_cipher(io);
	loop_flush_queue(io->loop, &io->flush);
	return 0;
}

/* The end of a round: what was written goes into one TLS record (OpenSSL
 * splits above 16 KiB), and all of the ciphertext into one write(2). */
static void flush_cb(struct loop_flush *f)
{
	struct tlsio *io = (struct tlsio *)((char *)f - offsetof(struct tlsio, flush));
	size_t len = io->pending_len;

	io->pending_len = 0;
	if (io->stopped || !io->tls)
		return;
	if (len && tls_conn_write(io->tls, io->pending, len) < 0) {
		end(io, TLSIO_END_ERROR, "cannot encrypt (out of memory)");
		return;
	}
	if (io->pending_cap > PENDING_KEEP) { /* a burst: do not keep its buffer */
		free(io->pending);
		io->pending = NULL;
		io->pending_cap = 0;
	}
	int rc = send_cipher(io);
	if (rc < 0)
		end(io, TLSIO_END_ERROR, uv_strerror(rc));
}

/* The end of a round in which TLS may have said something of its own (the
 * handshake's end, session tickets, an answer to a key update: queued by
 * drive_handshake() and read_cb()): what no write of the owner's took
 * along. */
static void tail_flush_cb(struct loop_flush *f)
{
	struct tlsio *io = (struct tlsio *)((char *)f - offsetof(struct tlsio, flush));

	if (io->stopped || !io->tls)
		return;
	int rc = send_cipher(io);
	if (rc < 0)
		end(io, TLSIO_END_ERROR, uv_strerror(rc));
}

void tlsio_coalesce(struct tlsio *io)
{
	io->coalesce = true;
	io->flush.cb = flush_cb;
}

static void drive_handshake(struct tlsio *io)
{
	int rc = tls_conn_handshake(io->tls);

	if (rc == 0) {
		/* What the handshake's end produced (a client's Finished, a
		 * TLS 1.2 server's ticket and Finished) leaves with the owner's
		 * first write of this round, or at the round's end
		 * (tail_flush_cb): one write(2) rather than two.  Queued before
		 * anything the owner queues, so it runs after it (the list is
		 * LIFO). */
		loop_flush_queue(io->loop, &io->flush);
		io->ready = true;
		io->cb->handshaken(io);
		return;
	}
	int sent = push_cipher(io);

	if (rc == TLS_EAGAIN && sent == 0)
		return;
	if (rc < 0 && rc != TLS_EAGAIN) {
		end(io, TLSIO_END_HANDSHAKE, tls_conn_error(io->tls));
		return;
	}
	if (sent < 0)
		end(io, TLSIO_END_HANDSHAKE, uv_strerror(sent));
}

static void read_plain(struct tlsio *io)
{
	uint8_t *buf = io->loop->scratch->plain;

	while (!io->stopped) {
		int n = tls_conn_read(io->tls, buf, sizeof(io->loop->scratch->plain));
		if (n == TLS_EAGAIN)
			break;
		if (n == TLS_ECLOSED) {
			end(io, TLSIO_END_EOF, "closed by the peer (close_notify)");
			return;
		}
		if (n < 0) {
			end(io, TLSIO_END_ERROR, tls_conn_error(io->tls));
			return;
		}
		io->cb->data(io, buf, (size_t)n);
	}
}

static void alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
	struct tlsio *io = handle->data;

	(void)suggested;
	*buf = uv_buf_init((char *)io->loop->scratch->read, sizeof(io->loop->scratch->read));
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct tlsio *io = stream->data;

	if (nread == 0 || io->stopped)
		return;
	if (nread < 0) {
		end(io, TLSIO_END_EOF,
		    nread == UV_EOF ? "closed by the peer" : uv_strerror((int)nread));
		return;
	}
	bool was_ready = io->ready;
	/* What TLS itself says while reading (a server's session tickets, an
	 * answer to a key update) leaves with the owner's writes of this
	 * round, or at its end: queued first, this flush runs last. */
	loop_flush_queue(io->loop, &io->flush);
	if (tls_conn_feed(io->tls, (const uint8_t *)buf->base, (size_t)nread) < 0) {
		end(io, TLSIO_END_ERROR, "out of memory");
		return;
	}
	if (!io->ready) {
		drive_handshake(io);
		if (!io->ready)
			return;
	}
	read_plain(io);
	/* Acknowledge at once: peers without TCP_NODELAY hold their next record
	 * until our ACK arrives, and a delayed ACK costs up to 40 ms.  Not
	 * when something of ours leaves this round and carries the ACK: the
	 * handshake's next flight, answers held for the round's flush, or the
	 * end of the stream. */
	uv_os_fd_t fd;
	if (was_ready && !io->stopped && io->pending_len == 0 &&
	    uv_fileno((uv_handle_t *)stream, &fd) == 0) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
	}
}

int tlsio_start(struct tlsio *io, struct tls_conn *tls)
{
	io->tls = tls;
	int rc = uv_read_start((uv_stream_t *)&io->tcp, alloc_cb, read_cb);
	if (rc < 0)
		return rc;
	drive_handshake(io);
	return 0;
}

int tlsio_write(struct tlsio *io, const uint8_t *data, size_t len)
{
	if (io->stopped || !io->ready)
		return -EPIPE;
	if (io->coalesce) {
		if (io->pending_len + len > io->pending_cap) {
			size_t cap = io->pending_cap ? io->pending_cap : PENDING_MIN;
			while (cap < io->pending_len + len)
				cap *= 2;
			uint8_t *grown = realloc(io->pending, cap);
			if (!grown)
				return -ENOMEM;
			io->pending = grown;
			io->pending_cap = cap;
		}
		memcpy(io->pending + io->pending_len, data, len);
		io->pending_len += len;
		loop_flush_queue(io->loop, &io->flush);
		return 0;
	}
	if (tls_conn_write(io->tls, data, len) < 0)
		return -EPROTO;
	return send_cipher(io);
}

void tlsio_pause(struct tlsio *io)
{
	uv_read_stop((uv_stream_t *)&io->tcp);
}

int tlsio_resume(struct tlsio *io)
{
	if (io->stopped)
		return -EPIPE;
	return uv_read_start((uv_stream_t *)&io->tcp, alloc_cb, read_cb);
}

size_t tlsio_backlog(const struct tlsio *io)
{
	return io->tcp.write_queue_size;
}

void tlsio_stop(struct tlsio *io)
{
	bool was_ready = io->ready && !io->stopped;

	io->stopped = true;
	loop_flush_cancel(io->loop, &io->flush);
	uv_read_stop((uv_stream_t *)&io->tcp);
	if (!was_ready || !io->tls)
		return;
	/* Answers of this round first (the last ones at shutdown), then
	 * close_notify: one try each, as much as the kernel takes at once. */
	if (io->pending_len)
		(void)tls_conn_write(io->tls, io->pending, io->pending_len);
	io->pending_len = 0;
	tls_conn_shutdown(io->tls);
	uint8_t *buf = io->loop->scratch->cipher;
	while (io->tcp.write_queue_size == 0 && tls_conn_out_pending(io->tls) > 0) {
		size_t n = tls_conn_out_take(io->tls, buf, sizeof(io->loop->scratch->cipher));
		uv_buf_t b = uv_buf_init((char *)buf, (unsigned)n);
		if (uv_try_write((uv_stream_t *)&io->tcp, &b, 1) != (int)n)
			break;
	}
}

void tlsio_close(struct tlsio *io, uv_close_cb close_cb)
{
	io->stopped = true;
	loop_flush_cancel(io->loop, &io->flush);
	uv_close((uv_handle_t *)&io->tcp, close_cb);
}

void tlsio_deinit(struct tlsio *io)
{
	tls_conn_free(io->tls);
	io->tls = NULL;
	free(io->pending);
	io->pending = NULL;
	io->pending_len = io->pending_cap = 0;
}
