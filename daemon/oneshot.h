/*
 * Servers whose connections carry one request and one response, then
 * close: what the metrics endpoint (TCP) and the control socket (unix) have
 * in common.  A connection reads at most max_request bytes within
 * request_ms; its owner looks at the bytes after each read and answers once
 * (oneshot_reply()), at once or later; after the response is written the
 * connection sends its FIN and discards whatever else the client sends
 * until the client closes (so that the kernel does not answer unread bytes
 * with a reset that could destroy the response), within reply_ms.  A
 * server takes at most max_conns connections at once; more are closed as
 * soon as they are accepted.  Nothing here blocks: a client that sends half
 * a request and falls silent costs one connection until request_ms.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

struct oneshot;
struct oneshot_server;

/** What the owner of a server does with its connections (all optional but
 * data).  Each runs on the server's loop. */
struct oneshot_ops {
	/** A new connection: refuse it by replying now (it closes after). */
	void (*accepted)(struct oneshot *c);
	/** More bytes came (c->buf, c->len; NUL-terminated), or the client
	 * half-closed (c->eof).  Reply now, or later after oneshot_pause();
	 * otherwise, at c->len == max_request or at EOF, the connection
	 * closes without a response. */
	void (*data)(struct oneshot *c);
	/** request_ms passed without a reply (or pause): reply now, or the
	 * connection closes without one. */
	void (*timeout)(struct oneshot *c);
	/** @c closes, whatever the reason: forget it.  No call about @c
	 * follows, and its memory goes once its handles are closed. */
	void (*closed)(struct oneshot *c);
};

/** What a server is. */
struct oneshot_config {
	const char *name;    /**< for logs: "metrics", "control" */
	size_t max_request;  /**< bytes read before a response, at most */
	unsigned max_conns;  /**< connections at once */
	unsigned request_ms; /**< to send the request */
	unsigned reply_ms;   /**< from the request (or pause) to the client's close */
	void *arg;	     /**< the owner's, for the ops */
};

/** One connection. */
struct oneshot {
	union {
		uv_handle_t handle;
		uv_stream_t stream;
		uv_tcp_t tcp;
		uv_pipe_t pipe;
	} h; /**< the client's socket */
	struct oneshot_server *server;
	char *buf; /**< what the client sent, max_request bytes at most (owned) */
	size_t len;
	bool eof;   /**< the client half-closed */
	void *user; /**< the owner's */
	/* the rest is oneshot.c's */
	uv_timer_t timer;
	uv_write_t write_req;
	uv_shutdown_t shutdown_req;
	struct oneshot *prev, *next; /**< in the server's list */
	int state;
	unsigned open_handles;
	char head[512];
	uv_buf_t out[2]; /**< head, then the owned body */
};

/** A server of @type (UV_TCP or UV_NAMED_PIPE) on @loop, its listening
 * handle initialised but not bound: bind oneshot_server_listener(), then
 * call oneshot_server_listen().  @cfg is copied; @ops must outlive it. */
struct oneshot_server *oneshot_server_new(uv_loop_t *loop, uv_handle_type type,
					  const struct oneshot_config *cfg,
					  const struct oneshot_ops *ops);

/** The listening handle, to bind (uv_tcp_bind(), uv_pipe_bind()). */
uv_handle_t *oneshot_server_listener(struct oneshot_server *s);

/** Start accepting.  0 or a libuv error (then close the server). */
int oneshot_server_listen(struct oneshot_server *s);

/** The owner's arg given in the config. */
void *oneshot_server_arg(const struct oneshot_server *s);

/** Close the listener and every connection (each gets its closed call);
 * the server's memory goes once its handles are closed. */
void oneshot_server_close(struct oneshot_server *s);

/** Stop the request timer of @c: the request is whole, the response will
 * come later (within reply_ms), and what the client sends meanwhile is
 * discarded. */
void oneshot_pause(struct oneshot *c);

/** Answer @c: @head (copied; at most 512 bytes) then @body (malloc()ed,
 * taken: freed once written; may be NULL), then close.  Once per
 * connection; ignored after the first or once closing. */
void oneshot_reply(struct oneshot *c, const char *head, size_t head_len, char *body,
		   size_t body_len);

/** Close @c now, without a response. */
void oneshot_close(struct oneshot *c);
