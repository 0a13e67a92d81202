/*
 * The control socket over daemon/oneshot.  Requests are parsed by
 * lib/ctlproto; stats and upstreams are rendered by lib/metrics; flushes go
 * through main (every worker's inbox) and are polled here until every
 * worker has done theirs, one flush at a time.
 */
#include "daemon/control.h"

#include "daemon/oneshot.h"
#include "lib/ctlproto.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/prom.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

enum {
	REQUEST_MS = 2000, /* to send the request line */
	REPLY_MS = 5000,   /* to read the answer and close, from the request */
	MAX_CONNS = 16,
	FLUSH_POLL_MS = 2, /* how often a flush in progress is checked */
	FLUSH_WAIT_MS = 3000,
	MAX_WAITING = 32, /* flushes waiting for their turn */
};

/* A flush request, from parsing to its answer. */
struct flush_req {
	struct oneshot *conn; /* NULL once the client went away */
	struct ctlproto_request req;
	struct flush_req *next;
};

struct control {
	struct oneshot_server *server;
	const struct control_ops *ops;
	void *arg;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	ino_t ino; /* of the socket file we made */
	dev_t dev;
	uv_timer_t poll;	   /* while a flush is in progress */
	struct flush_req *active;  /* the flush in progress */
	uint64_t active_since;	   /* uv_now() when it started */
	struct flush_req *waiting; /* the next ones, in order */
	unsigned n_waiting;
};

/* "ok\n" and @body, or "error MESSAGE\n"; then the connection closes. */
static void send_text(struct oneshot *c, struct prom_buf *body)
{
	if (body->failed || !body->data) {
		prom_buf_free(body);
		oneshot_reply(c, "error out of memory\n", 20, NULL, 0);
		return;
	}
	oneshot_reply(c, "ok\n", 3, body->data, body->len);
}

static void send_error(struct oneshot *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void send_error(struct oneshot *c, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	int n = snprintf(line, sizeof(line), "error ");
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	oneshot_reply(c, line, (size_t)n, NULL, 0);
}

static void answer_flush(struct flush_req *f, bool done, uint64_t removed)
{
	struct prom_buf body = { 0 };
	bool all = f->req.name_len == 0;

	if (!f->conn)
		return;
	if (!done) {
		send_error(f->conn, "flush not confirmed by every worker within %d ms",
			   FLUSH_WAIT_MS);
		return;
	}
	if (f->req.json) {
		prom_buf_append(&body, "{\"flushed\":", 11);
		prom_json_string(&body, all ? "." : f->req.name_text);
		prom_buf_printf(&body, ",\"removed\":%llu}\n", (unsigned long long)removed);
	} else if (all) {
		prom_buf_printf(&body, "flushed the whole cache: %llu entries removed\n",
				(unsigned long long)removed);
	} else {
		prom_buf_printf(&body, "flushed %s and every name below it: %llu entries removed\n",
				f->req.name_text, (unsigned long long)removed);
	}
	send_text(f->conn, &body);
}

static void start_next_flush(struct control *ctl);

static void poll_cb(uv_timer_t *timer)
{
	struct control *ctl = timer->data;
	struct flush_req *f = ctl->active;
	uint64_t removed = 0;

	if (!f)
		return;
	bool done = ctl->ops->flush_done(ctl->arg, &removed);
	if (!done && uv_now(timer->loop) - ctl->active_since < FLUSH_WAIT_MS)
		return;
	uv_timer_stop(timer);
	if (f->conn)
		f->conn->user = NULL;
	answer_flush(f, done, removed);
	free(f);
	ctl->active = NULL;
	start_next_flush(ctl);
}

static void start_next_flush(struct control *ctl)
{
	struct flush_req *f = ctl->waiting;

	if (ctl->active || !f)
		return;
	ctl->waiting = f->next;
	ctl->n_waiting--;
	ctl->active = f;
	ctl->active_since = uv_now(ctl->poll.loop);
	ctl->ops->flush_start(ctl->arg, f->req.name, f->req.name_len);
	uv_timer_start(&ctl->poll, poll_cb, FLUSH_POLL_MS, FLUSH_POLL_MS);
}

static void queue_flush(struct control *ctl, struct oneshot *c, const struct ctlproto_request *req)
{
	if (ctl->n_waiting >= MAX_WAITING) {
		send_error(c, "busy: %u flushes are waiting already", ctl->n_waiting);
		return;
	}
	struct flush_req *f = calloc(1, sizeof(*f));
	require(f);
	f->conn = c;
	f->req = *req;
	c->user = f;
	struct flush_req **tail = &ctl->waiting;
	while (*tail)
		tail = &(*tail)->next;
	*tail = f;
	ctl->n_waiting++;
	oneshot_pause(c);
	start_next_flush(ctl);
}

static void run(struct control *ctl, struct oneshot *c, const struct ctlproto_request *req)
{
	struct prom_buf body = { 0 };
	struct prom_writer w;
	char msg[1024];

	switch (req->command) {
	case CTLPROTO_STATS:
		prom_writer_init(&w, &body, req->json ? PROM_JSON : PROM_LINES);
		metrics_export(&w);
		prom_writer_end(&w);
		send_text(c, &body);
		return;
	case CTLPROTO_UPSTREAMS:
		metrics_export_upstreams(&body, req->json);
		prom_buf_append(&body, "", 0); /* no upstream, no text: an empty body */
		send_text(c, &body);
		return;
	case CTLPROTO_FLUSH:
		queue_flush(ctl, c, req);
		return;
	case CTLPROTO_RELOAD:
		log_tagged("notice", "control: reload requested");
		if (ctl->ops->reload(ctl->arg, msg, sizeof(msg)) < 0) {
			send_error(c, "reload failed, configuration unchanged: %s", msg);
			return;
		}
		if (req->json) {
			prom_buf_append(&body, "{\"reloaded\":true,\"message\":", 27);
			prom_json_string(&body, msg);
			prom_buf_append(&body, "}\n", 2);
		} else {
			prom_buf_printf(&body, "%s\n", msg);
		}
		send_text(c, &body);
		return;
	}
	send_error(c, "internal error: unknown command");
}

static void accepted(struct oneshot *c)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	uv_os_fd_t fd;

	if (uv_fileno(&c->h.handle, &fd) != 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
		send_error(c, "cannot read the client's credentials: %s", strerror(errno));
		return;
	}
	uid_t me = geteuid();
	if (cred.uid != 0 && cred.uid != me) {
		log_warn("control: refused a client running as uid %u (pid %d): only root and "
			 "uid %u may use it",
			 (unsigned)cred.uid, (int)cred.pid, (unsigned)me);
		send_error(c,
			   "permission denied: uid %u is neither root nor dotproxy's user (uid %u)",
			   (unsigned)cred.uid, (unsigned)me);
	}
}

static void data(struct oneshot *c)
{
	struct control *ctl = oneshot_server_arg(c->server);
	struct ctlproto_request req;
	char err[256];
	const char *lf = memchr(c->buf, '\n', c->len);

	if (!lf) {
		if (c->len >= CTLPROTO_MAX_LINE)
			send_error(c, "request too long (at most %d bytes, LF included)",
				   CTLPROTO_MAX_LINE);
		else if (c->eof)
			send_error(c, "incomplete request: no LF before the end");
		return;
	}
	if (ctlproto_parse(c->buf, (size_t)(lf - c->buf), &req, err, sizeof(err)) < 0) {
		send_error(c, "%s", err);
		return;
	}
	log_debug("control: %s", ctlproto_command_name(req.command));
	run(ctl, c, &req);
}

static void timeout(struct oneshot *c)
{
	send_error(c, "no complete request line within %d ms", REQUEST_MS);
}

static void closed(struct oneshot *c)
{
	struct flush_req *f = c->user;

	if (f)
		f->conn = NULL; /* the flush goes on; its answer goes nowhere */
}

static const struct oneshot_ops ops = {
	.accepted = accepted,
	.data = data,
	.timeout = timeout,
	.closed = closed,
};

/* A socket file at @path from an earlier run: replaced if nobody listens on
 * it.  0, or -1 with @err set. */
static int clear_stale(const char *path, char *err, size_t errlen)
{
	struct stat st;
	struct sockaddr_un sun = { .sun_family = AF_UNIX };

	if (lstat(path, &st) != 0)
		return 0;
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "--control %s: exists and is not a socket; not replacing it",
			 path);
		return -1;
	}
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "--control %s: socket: %s", path, strerror(errno));
		return -1;
	}
	int rc = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
	int connect_errno = errno;
	close(fd);
	if (rc == 0) {
		snprintf(err, errlen,
			 "--control %s: another process is listening on it (another dotproxy?)",
			 path);
		return -1;
	}
	if (connect_errno != ECONNREFUSED && connect_errno != ENOENT) {
		snprintf(err, errlen, "--control %s: cannot tell whether it is in use: %s", path,
			 strerror(connect_errno));
		return -1;
	}
	if (unlink(path) != 0 && errno != ENOENT) {
		snprintf(err, errlen, "--control %s: cannot remove the stale socket: %s", path,
			 strerror(errno));
		return -1;
	}
	log_info("control: replaced the stale socket %s", path);
	return 0;
}

struct control *control_start(uv_loop_t *loop, const char *path, const struct control_ops *cops,
			      void *arg, char *err, size_t errlen)
{
	struct control *ctl = calloc(1, sizeof(*ctl));
	struct stat st = { 0 };
	require(ctl);
	struct oneshot_config cfg = {
		.name = "control",
		.max_request = CTLPROTO_MAX_LINE,
		.max_conns = MAX_CONNS,
		.request_ms = REQUEST_MS,
		.reply_ms = REPLY_MS,
		.arg = ctl,
	};

	ctl->ops = cops;
	ctl->arg = arg;
	if (strlen(path) >= sizeof(ctl->path)) {
		snprintf(err, errlen, "--control %s: path too long", path);
		free(ctl);
		return NULL;
	}
	snprintf(ctl->path, sizeof(ctl->path), "%s", path);
	if (clear_stale(path, err, errlen) < 0) {
		free(ctl);
		return NULL;
	}
	ctl->server = oneshot_server_new(loop, UV_NAMED_PIPE, &cfg, &ops);
	uv_pipe_t *pipe = (uv_pipe_t *)oneshot_server_listener(ctl->server);
	/* Made with mode 0600 whatever the umask: nobody but the owner may
	 * connect between bind() and chmod().  The umask is the process's; no
	 * other thread runs yet. */
	mode_t old = umask(0177);
	int rc = uv_pipe_bind(pipe, path);
	umask(old);
	if (rc == 0 && (chmod(path, 0600) != 0 || lstat(path, &st) != 0))
		rc = -errno;
	if (rc == 0)
		rc = oneshot_server_listen(ctl->server);
	if (rc < 0) {
		snprintf(err, errlen, "--control %s: %s", path, uv_strerror(rc));
		oneshot_server_close(ctl->server);
		free(ctl);
		return NULL;
	}
	ctl->ino = st.st_ino;
	ctl->dev = st.st_dev;
	uv_timer_init(loop, &ctl->poll);
	ctl->poll.data = ctl;
	log_info("control socket at %s", path);
	return ctl;
}

int control_chown(struct control *ctl, uid_t uid, gid_t gid)
{
	return chown(ctl->path, uid, gid) == 0 ? 0 : -errno;
}

static void poll_closed_cb(uv_handle_t *handle)
{
	free(handle->data);
}

void control_close(struct control *ctl)
{
	struct stat st;

	oneshot_server_close(ctl->server); /* closed(): no flush answers anyone now */
	if (ctl->active)
		free(ctl->active);
	for (struct flush_req *f = ctl->waiting, *next; f; f = next) {
		next = f->next;
		free(f);
	}
	if (lstat(ctl->path, &st) == 0 && st.st_ino == ctl->ino && st.st_dev == ctl->dev &&
	    unlink(ctl->path) != 0)
		log_debug("control: cannot remove %s: %s", ctl->path, strerror(errno));
	uv_timer_stop(&ctl->poll);
	uv_close((uv_handle_t *)&ctl->poll, poll_closed_cb);
}
