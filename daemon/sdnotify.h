/*
 * Telling systemd how the service is doing (sd_notify(3) protocol, without
 * libsystemd): READY=1 once every socket is bound, RELOADING=1 and READY=1
 * around a SIGHUP reload, STOPPING=1 when a drain begins.  With Type=notify
 * in the unit, `systemctl start` returns only once dotproxy answers, and
 * units ordered after it (nss-lookup.target) start after that.
 *
 * The messages go to $NOTIFY_SOCKET (a path, or an abstract name starting
 * with '@'); without it, nothing is sent.
 */
#pragma once

/** Send @state ("READY=1", ...) to $NOTIFY_SOCKET, if set.  Failures are
 * logged at debug level and otherwise ignored: the service goes on. */
void sdnotify(const char *state);
