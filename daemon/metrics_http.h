/*
 * The Prometheus endpoint (--metrics ADDR:PORT): GET /metrics over HTTP/1.1
 * answers every counter and gauge in the text exposition format (version
 * 0.0.4), summed over the workers, on the loop it is given (worker 0's).
 * Nothing else is served (404, 405, 400, 413 say why); one request per
 * connection, which closes after the answer; a request must arrive within
 * two seconds, and at most eight connections are open at once.  Clients
 * outside --allow get 403.
 */
#pragma once

#include "lib/acl.h"
#include "lib/options.h"

#include <stddef.h>
#include <uv.h>

struct metrics_http;

/** Listen on @addr on @loop, answering clients that @allow lets in (kept
 * by pointer: see metrics_http_set_allow()).  NULL with the reason in @err
 * when the address cannot be bound. */
struct metrics_http *metrics_http_start(uv_loop_t *loop, const struct options_addr *addr,
					const struct acl *allow, char *err, size_t errlen);

/** The clients allowed from now on (a reload). */
void metrics_http_set_allow(struct metrics_http *m, const struct acl *allow);

/** Stop listening and close every connection; memory goes with the handles. */
void metrics_http_close(struct metrics_http *m);
