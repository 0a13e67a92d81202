/*
 * The control socket (--control PATH): a unix stream socket on the loop it
 * is given (worker 0's) that answers dotproxyctl, one request per
 * connection, in the protocol of lib/ctlproto.h: stats, upstreams, flush
 * [NAME], reload, each with a --json form.
 *
 * Who may ask: the socket is made with mode 0600 whatever the umask, so
 * only its owner (dotproxy's user; the --user after start-up) and root get
 * through the file system; and each client's credentials (SO_PEERCRED) must
 * be root's or dotproxy's own user's, so a descriptor passed along or a
 * directory opened up changes nothing.  A socket file left by a crash (no
 * one listening on it) is replaced; a live one, or a file that is not a
 * socket, stops start-up.
 *
 * What needs the rest of the process (reload, flushing every worker's cache)
 * is done through the callbacks main gives; a flush is answered once every
 * worker has done it (one at a time; others wait their turn).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

struct control;

/** What the control socket asks of the process. */
struct control_ops {
	/** Reload the configuration as SIGHUP does.  0 with what was loaded in
	 * @msg, or -1 with the reason in @msg. */
	int (*reload)(void *arg, char *msg, size_t cap);
	/** Start removing @name (wire form, lower case; @len 0: everything)
	 * and every name below it from every worker's cache. */
	void (*flush_start)(void *arg, const uint8_t *name, size_t len);
	/** Is the flush started last done in every worker?  @removed: the
	 * entries it removed so far. */
	bool (*flush_done)(void *arg, uint64_t *removed);
};

/** Listen on @path on @loop.  @ops and @arg must outlive the control
 * socket.  NULL with the reason in @err. */
struct control *control_start(uv_loop_t *loop, const char *path, const struct control_ops *ops,
			      void *arg, char *err, size_t errlen);

/** Give the socket file to @uid and @gid (before --user drops root).  0 or
 * -errno. */
int control_chown(struct control *ctl, uid_t uid, gid_t gid);

/** Stop: close every connection and the socket, and remove the socket
 * file if it is still ours (a failure to is only logged). */
void control_close(struct control *ctl);
