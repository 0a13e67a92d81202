"""A scriptable DNS-over-TLS server (RFC 7858) that misbehaves on request.

It runs inside the test process, on a background thread with its own asyncio
event loop, so a test can change its behaviour between two queries and read
what it received without any inter-process plumbing.

TLS is done by hand on memory BIOs (ssl.SSLObject) over plain asyncio TCP
transports rather than with asyncio's built-in TLS. The built-in layer hides
exactly what we need to control: it always completes the handshake, waits up
to 30 s for the peer's close_notify before closing, and can't be told to
send half a frame or a bare TCP reset. With our own pump, "stall the
handshake", "close_notify then FIN", "RST" and "trickle bytes" are each a few
lines.

Behaviours (keyword arguments of the constructor and of set(); all default to
a well-behaved server, see DEFAULT_BEHAVIOUR):

  responder        callable(query Message) -> Message | bytes | None; None
                   means "no answer". Default: default_responder().
  delay            seconds to wait before answering each query, or a
                   callable(query) -> seconds. Answers are independent, so
                   a fast one overtakes a slow one.
  reorder          N: per connection, hold answers until N are ready, then
                   send them in the reverse order of their queries' arrival.
  close_after      K: per connection, answer the first K queries and then
                   close; queries read after that are recorded, never
                   answered. K=0 closes as soon as the first query is read.
  close_mode       "notify": TLS close_notify then TCP FIN (a polite server);
                   "fin": a bare TCP FIN after the answers already sent, no
                   close_notify (a server that just close()s its socket);
                   "reset": TCP RST, no close_notify (a crashed one).
                   After "notify" or "fin" the fake keeps reading (and
                   dropping) what the peer still sends, until the peer
                   closes or LINGER_SECONDS pass, so the close stays a FIN:
                   a socket closed with unread bytes would send a RST.
  stall            read and record queries, never answer.
  hold             read and record queries, answer none for now; set(hold=False)
                   then answers every held query on its own connection (those
                   whose connection closed meanwhile are dropped), so a test
                   can keep queries in flight for exactly as long as it wants.
  stall_handshake  accept TCP, never speak TLS (ClientHello is ignored).
  wrong_id         answer with ID xor 0x5a5a, nothing else.
  wrong_question   answer with the right ID for "evil.<qname>", nothing else.
  wrong_then_right send a wrong-ID and a wrong-question answer, both carrying
                   the poisoned A record 6.6.6.6, then the correct answer.
  garbage          send a frame of junk, then after `garbage_delay` the
                   correct answer. True = random junk; "same_id" = junk that
                   starts with the query's ID (so an ID lookup matches it).
  garbage_raw      send bytes that break the framing (length 0xFFFF, a few
                   bytes), then close (per close_mode).
  endless_frame    send length 0xFFFF and then one byte every
                   `trickle_interval` seconds, never completing the frame.
  idle_timeout     seconds without a query after which the server closes the
                   connection (per close_mode); None = never.
  keepalive        if set, an int in units of 100 ms: answers to EDNS queries
                   carry edns-tcp-keepalive (RFC 7828) with this timeout.
"""

import asyncio
import concurrent.futures
import fcntl
import ipaddress
import logging
import os
import socket
import ssl
import struct
import sys
import termios
import threading
import time

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

log = logging.getLogger("fake_upstream")

CLOSE_MODES = ("notify", "fin", "reset")

DEFAULT_BEHAVIOUR = {
    "responder": None,
    "delay": 0,
    "reorder": 0,
    "close_after": None,
    "close_mode": "notify",
    "stall": False,
    "hold": False,
    "stall_handshake": False,
    "wrong_id": False,
    "wrong_question": False,
    "wrong_then_right": False,
    "garbage": False,
    "garbage_delay": 0.05,
    "garbage_raw": False,
    "endless_frame": False,
    "trickle_interval": 0.2,
    "idle_timeout": None,
    "keepalive": None,
}

# Addresses from the documentation ranges (RFC 5737 / RFC 3849), so nothing a
# test sees can be mistaken for a real answer.
ANSWER_A = "192.0.2.1"
ANSWER_AAAA = "2001:db8::1"
BIG_COUNT = 100  # 100 A records: about 1.6 kB, above 512, 1232 and 1500
POISON_A = "6.6.6.6"
TTL = 300
NEGATIVE_TTL = 60
EDNS_PAYLOAD = 1232

_KEEPALIVE_OPTION = 11  # RFC 7828 edns-tcp-keepalive

# How long a connection we closed ("notify", "fin") keeps reading after its FIN.
LINGER_SECONDS = 2.0


def _first_label(name):
    if len(name.labels) < 2:  # the root has no first label worth testing
        return ""
    return name.labels[0].decode("ascii", "replace").lower()


def _soa_for(name):
    # A negative answer carries an SOA so resolvers can cache it (RFC 2308);
    # its owner is the parent of the queried name, which is plausible enough.
    zone = name.parent() if len(name.labels) > 2 else dns.name.root
    mname = dns.name.from_text("ns", origin=zone)
    rname = dns.name.from_text("hostmaster", origin=zone)
    return dns.rrset.from_text(zone, NEGATIVE_TTL, "IN", "SOA",
                               f"{mname} {rname} 1 3600 600 86400 {NEGATIVE_TTL}")


def default_responder(query):
    """The well-behaved answer described in the module docstring.

    A: 192.0.2.1; AAAA: 2001:db8::1; first label starting with "big": 100 A
    records 192.0.2.1..100; first label starting with "nx": NXDOMAIN; other
    types: NODATA. EDNS is echoed (payload 1232) when the query had it.
    """
    resp = dns.message.make_response(query, recursion_available=True,
                                     our_payload=EDNS_PAYLOAD)
    if not query.question:
        resp.set_rcode(dns.rcode.FORMERR)
        return resp
    q = query.question[0]
    first = _first_label(q.name)
    if first.startswith("nx"):
        resp.set_rcode(dns.rcode.NXDOMAIN)
        resp.authority.append(_soa_for(q.name))
    elif q.rdtype == dns.rdatatype.A and first.startswith("big"):
        resp.answer.append(dns.rrset.from_text_list(
            q.name, TTL, "IN", "A", [f"192.0.2.{i}" for i in range(1, BIG_COUNT + 1)]))
    elif q.rdtype == dns.rdatatype.A:
        resp.answer.append(dns.rrset.from_text(q.name, TTL, "IN", "A", ANSWER_A))
    elif q.rdtype == dns.rdatatype.AAAA:
        resp.answer.append(dns.rrset.from_text(q.name, TTL, "IN", "AAAA", ANSWER_AAAA))
    else:
        resp.authority.append(_soa_for(q.name))
    return resp


def _with_question(query, name):
    """A copy of `query` asking about `name` instead (same ID, type, flags, EDNS)."""
    copy = dns.message.from_wire(query.to_wire())
    q = copy.question[0]
    copy.question = [dns.rrset.RRset(name, q.rdclass, q.rdtype)]
    return copy


def _evil_name(name):
    return dns.name.Name((b"evil",) + name.labels)


class _Conn(asyncio.Protocol):
    """One accepted connection: a TLS pump plus DNS framing.

    Lives entirely on the event loop thread; talks to the FakeUpstream only
    to read behaviour and to record what it received.
    """

    def __init__(self, server):
        self.srv = server
        self.index = None
        self.transport = None
        self.tls = None           # ssl.SSLObject once the handshake may start
        self.bio_in = ssl.MemoryBIO()
        self.bio_out = ssl.MemoryBIO()
        self.handshaken = False
        self.buf = bytearray()    # decrypted bytes not yet forming a whole frame
        self.nread = 0            # queries read on this connection
        self.nanswered = 0        # queries whose answer went out completely
        self.held = []            # answers waiting for `reorder`
        self.tasks = set()
        self.closed = False
        self.trickling = False
        self.on_hold = []         # queries read under `hold`, to answer when it ends
        self.idle_handle = None
        self.linger_handle = None  # closes a connection lingering after our FIN

    # -- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        self.index = self.srv._on_connection(self)
        b = self.srv._snapshot()
        if b["stall_handshake"]:
            return  # self.tls stays None: incoming bytes are dropped
        self.tls = self.srv._ctx.wrap_bio(self.bio_in, self.bio_out, server_side=True)
        self._arm_idle(b)

    def data_received(self, data):
        if self.closed or self.tls is None:
            return
        try:
            self.bio_in.write(data)
            if not self.handshaken and not self._handshake():
                return
            self._read_app_data()
        except Exception as e:  # a bug in this file must show up in the test
            self.srv._error(f"connection {self.index}: {e!r}")
            log.exception("fake upstream connection %s failed", self.index)
            self.abort()

    def eof_received(self):
        # The peer half-closed. We never keep a half-open connection: the
        # daemon under test should not depend on it.
        return False

    def connection_lost(self, exc):
        self.closed = True
        self._cancel_timers()
        self.srv._on_connection_lost(self)

    # -- TLS pump ------------------------------------------------------------

    def _flush(self):
        out = self.bio_out.read()
        if out and not self.closed:
            self.transport.write(out)

    def _handshake(self):
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return False
        except (ssl.SSLError, OSError) as e:
            self._flush()  # lets our alert reach the peer
            self.srv._on_handshake_failed(self, e)
            self.abort()
            return False
        self.handshaken = True
        self._flush()
        self.srv._on_handshake(self, self.tls.session_reused)
        return True

    def _read_app_data(self):
        while not self.closed:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                chunk = b""
            except (ssl.SSLError, OSError) as e:
                log.debug("connection %s: TLS read failed: %r", self.index, e)
                self.abort()
                return
            if not chunk:
                # SSLObject.read() returns b"" for a received close_notify: the
                # client is done, so answer in kind and go away.
                self.close("notify")
                return
            self.srv._count_app_bytes(len(chunk))
            self.buf += chunk
        self._flush()  # TLS 1.3 tickets and key updates are written during reads
        while len(self.buf) >= 2 and not self.closed:
            n = int.from_bytes(self.buf[:2], "big")
            if len(self.buf) < 2 + n:
                break
            wire = bytes(self.buf[2:2 + n])
            del self.buf[:2 + n]
            self._on_query(wire)

    def send(self, data):
        """Encrypt and send `data` as one write (a frame never interleaves)."""
        if self.closed or not self.handshaken:
            return
        self.tls.write(data)
        self._flush()

    def close(self, mode="notify"):
        """Close per `mode`: "notify" (close_notify, then FIN), "fin" (FIN alone)
        or "reset" (RST)."""
        if self.closed:
            return
        if mode == "reset":
            self.abort(reset=True)
            return
        if self.handshaken and mode != "fin":
            try:
                self.tls.unwrap()  # sends close_notify...
            except ssl.SSLWantReadError:
                pass               # ...and we do not wait for the peer's
            except (ssl.SSLError, OSError):
                pass
            self._flush()
        self.closed = True
        self._cancel_timers()
        self._linger()

    def _linger(self):
        """FIN once everything written is out, then read and drop what still
        arrives until the peer closes too (or LINGER_SECONDS pass).

        Closing the socket at once would leave the queries the peer sent
        meanwhile unread, and a close with unread bytes is a TCP RST that also
        throws away answers still in our send queue: "answer K, then FIN"
        would now and then become "answer fewer, then RST".
        """
        try:
            self.transport.write_eof()
        except (OSError, NotImplementedError):  # the peer is already gone
            self.transport.close()
            return
        self.linger_handle = self.srv._loop.call_later(LINGER_SECONDS, self.transport.close)

    def abort(self, reset=False):
        """Drop the connection now; reset=True makes it a TCP RST, after what was sent."""
        self.closed = True
        self._cancel_timers()
        if reset:
            # A close with SO_LINGER 0 discards whatever the kernel has not put
            # on the wire yet, and Linux autocorking can hold back small writes
            # made a moment ago (the answers we just sent). Wait for the send
            # queue to drain first, so "answer K, then RST" really answers K.
            self.srv._background(self._reset_when_drained())
            return
        self.transport.abort()

    async def _reset_when_drained(self):
        sock = self.transport.get_extra_info("socket")
        deadline = time.monotonic() + 1.0
        try:
            while time.monotonic() < deadline and not self.transport.is_closing():
                buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
                if self.transport.get_write_buffer_size() == 0 and \
                        int.from_bytes(buf, sys.byteorder) == 0:
                    break
                await asyncio.sleep(0.005)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except (OSError, ValueError):
            pass  # the socket is already gone: nothing left to reset
        self.transport.abort()

    # -- timers ------------------------------------------------------------

    def _arm_idle(self, b):
        if self.idle_handle is not None:
            self.idle_handle.cancel()
            self.idle_handle = None
        if b["idle_timeout"] is not None and not self.closed:
            self.idle_handle = self.srv._loop.call_later(
                b["idle_timeout"], self._idle_expired)

    def _idle_expired(self):
        # Pending answers count as activity: only a connection with nothing
        # left to say is idle.
        if self.nanswered < self.nread and not self.srv._snapshot()["stall"]:
            self._arm_idle(self.srv._snapshot())
            return
        log.debug("connection %s: idle timeout", self.index)
        self.close(self.srv._snapshot()["close_mode"])

    def _cancel_timers(self):
        if self.idle_handle is not None:
            self.idle_handle.cancel()
            self.idle_handle = None
        if self.linger_handle is not None:
            self.linger_handle.cancel()
            self.linger_handle = None
        for t in list(self.tasks):
            t.cancel()

    def _spawn(self, coro):
        task = self.srv._loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task):
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            e = task.exception()
            self.srv._error(f"connection {self.index}: {e!r}")
            log.error("fake upstream task failed", exc_info=e)
            self.abort()

    # -- DNS -----------------------------------------------------------------

    def _on_query(self, wire):
        msg = self.srv._record_query(self, wire)
        b = self.srv._snapshot()
        self._arm_idle(b)
        n = self.nread
        self.nread += 1
        if b["stall"]:
            return
        if b["hold"]:
            if msg is not None:
                self.on_hold.append(msg)
            return
        if b["close_after"] is not None and n >= b["close_after"]:
            # Not answered. If nothing earlier is still on its way out, this
            # is the moment to close (covers close_after=0).
            if self.nanswered >= b["close_after"]:
                self.close(b["close_mode"])
            return
        if msg is None:
            return  # unparseable: nothing sensible to answer
        if b["garbage_raw"]:
            self.send(b"\xff\xff" + os.urandom(5))
            self.close(b["close_mode"])
            return
        if b["endless_frame"]:
            if not self.trickling:
                self.trickling = True
                self._spawn(self._trickle(b["trickle_interval"]))
            return
        self._spawn(self._answer(msg, b))

    async def _trickle(self, interval):
        self.send(b"\xff\xff")
        while not self.closed:
            await asyncio.sleep(interval)
            self.send(os.urandom(1))

    async def _answer(self, query, b):
        delay = b["delay"](query) if callable(b["delay"]) else b["delay"]
        if delay:
            await asyncio.sleep(delay)
        frames = self.srv._frames(query, b)
        if frames is None:  # the responder chose not to answer
            return
        if b["reorder"] and b["reorder"] > 1:
            self.held.append(frames)
            if len(self.held) < b["reorder"]:
                return
            batch, self.held = self.held[::-1], []
        else:
            batch = [frames]
        for fr in batch:
            await self._send_frames(fr, b)

    async def _send_frames(self, frames, b):
        for pause, data in frames:
            if pause:
                await asyncio.sleep(pause)
            if self.closed:
                return
            self.send(len(data).to_bytes(2, "big") + data)
        self.nanswered += 1
        if b["close_after"] is not None and self.nanswered >= b["close_after"]:
            self.close(b["close_mode"])


class LoopServer:
    """A TLS server on an asyncio loop of its own thread: the lifecycle both
    fake servers (this one and fake_doh.FakeDoH) share.  A subclass sets
    `what` (for messages and the thread's name), makes `self._ctx` (see
    server_context()), and gives _new_conn() (the protocol of one accepted
    connection) and _close_all() (a coroutine that closes every connection
    and the listener)."""
    what = "server"

    @staticmethod
    def server_context(cert, key, *, session_tickets=True, alpn=()):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # Without this a client's bare TCP close reads like its close_notify.
        ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
        ctx.load_cert_chain(cert, key)
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        if not session_tickets:
            # TLS 1.2 tickets and TLS 1.3 tickets are switched off separately.
            ctx.options |= ssl.OP_NO_TICKET
            ctx.num_tickets = 0
        return ctx

    def start(self):
        """Bind (SO_REUSEADDR) and serve. After stop(), rebinds the same port."""
        if self._thread is not None:
            raise RuntimeError(f"{self.what} already started")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name=f"{self.what.replace(' ', '-')}-{self.port}",
                                        daemon=True)
        self._thread.start()
        try:
            self._call(self._listen())
        except BaseException:
            self._shutdown_loop()
            raise
        log.debug("%s listening on %s:%s", self.what, self.host, self.port)
        return self

    def stop(self):
        """Close the listener and every connection abruptly (no close_notify)."""
        if self._thread is None:
            return
        try:
            self._call(self._close_all())
        finally:
            self._shutdown_loop()

    @property
    def running(self):
        return self._thread is not None

    def __enter__(self):
        return self.start() if not self.running else self

    def __exit__(self, *exc):
        self.stop()

    def _call(self, coro, timeout=5.0):
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TimeoutError(f"{self.what} event loop did not respond") from None

    def _shutdown_loop(self):
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if self._thread.is_alive():
            self.errors.append("the event loop thread did not stop within 5 s")
        else:
            self._loop.close()
        self._thread = None
        self._loop = None

    async def _listen(self):
        fam = socket.AF_INET6 if ipaddress.ip_address(self.host).version == 6 else socket.AF_INET
        sock = socket.socket(fam, socket.SOCK_STREAM)
        try:
            # Lets start() after stop() rebind at once despite TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self._server = await self._loop.create_server(self._new_conn, sock=sock, backlog=1024)


class FakeUpstream(LoopServer):
    """A DoT server on a background thread; see the module docstring for behaviours.

    Counters and records are safe to read from the test thread at any time;
    list attributes return snapshots (copies).
    """
    what = "fake upstream"

    def __init__(self, cert, key, *, host="127.0.0.1", port=0, session_tickets=True,
                 **behaviour):
        self.cert, self.key, self.host = cert, key, host
        self.port = port
        ctx = self.server_context(cert, key, session_tickets=session_tickets)
        ctx.sni_callback = self._on_sni
        self._ctx = ctx  # kept across stop()/start(), so tickets stay valid
        self._lock = threading.Lock()
        self._behaviour = dict(DEFAULT_BEHAVIOUR)
        self.set(**behaviour)
        self._loop = None
        self._thread = None
        self._server = None
        self._conns = set()
        self._bg_tasks = set()  # tasks that outlive their connection (delayed resets)
        self.errors = []  # internal failures of the fake itself; tests assert it is empty
        self.reset_counters()

    # -- lifecycle ------------------------------------------------------------

    def _new_conn(self):
        return _Conn(self)

    async def _close_all(self):
        self._server.close()
        tasks = [t for c in self._conns for t in c.tasks] + list(self._bg_tasks)
        for c in list(self._conns):
            c.transport.abort()  # a server going down: no close_notify, no RST
            c.closed = True
            c._cancel_timers()
        for t in self._bg_tasks:
            t.cancel()
        # Wait for the cancelled tasks and for connection_lost callbacks, so the
        # loop stops with nothing pending.
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
        await asyncio.sleep(0)

    def _background(self, coro):
        task = self._loop.create_task(coro)
        self._bg_tasks.add(task)
        task.add_done_callback(self._bg_tasks.discard)

    def drop_connections(self, mode="notify"):
        """Close every open connection (per `mode`, one of CLOSE_MODES) but keep listening."""
        async def go():
            for c in list(self._conns):
                c.close(mode)
        self._call(go())

    # -- behaviour ---------------------------------------------------------------

    def set(self, **behaviour):
        """Change behaviour; applies to queries and connections from now on.

        Ending `hold` (hold=False) also answers the queries held so far, per
        the new behaviour, before returning.
        """
        for k, v in behaviour.items():
            if k not in DEFAULT_BEHAVIOUR:
                raise TypeError(f"unknown FakeUpstream behaviour {k!r}")
            if k == "close_mode" and v not in CLOSE_MODES:
                raise ValueError(f"close_mode must be one of {CLOSE_MODES}")
        with self._lock:
            self._behaviour.update(behaviour)
        if "hold" in behaviour and not behaviour["hold"] and getattr(self, "_loop", None):
            self._call(self._release_held())

    async def _release_held(self):
        b = self._snapshot()
        for c in list(self._conns):
            held, c.on_hold = c.on_hold, []
            for msg in held:
                if not c.closed:
                    c._spawn(c._answer(msg, b))

    @property
    def held(self):
        """How many queries `hold` is keeping unanswered on open connections."""
        if self._loop is None:
            return 0

        async def count():
            return sum(len(c.on_hold) for c in self._conns if not c.closed)
        return self._call(count())

    def _snapshot(self):
        with self._lock:
            return dict(self._behaviour)

    def _frames(self, query, b):
        """The list of (pause_seconds, wire) frames answering `query`, or None."""
        respond = b["responder"] or default_responder
        if b["wrong_question"] or b["wrong_then_right"]:
            evil = _with_question(query, _evil_name(query.question[0].name))
        good = self._encode(respond(query), query, b)
        if good is None:
            return None
        if b["wrong_id"]:
            return [(0, self._with_id(good, query.id ^ 0x5A5A))]
        if b["wrong_question"]:
            wrong = self._encode(respond(evil), evil, b)
            return None if wrong is None else [(0, wrong)]
        frames = []
        if b["wrong_then_right"]:
            frames.append((0, self._with_id(self._poisoned(query, query), query.id ^ 0x5A5A)))
            frames.append((0, self._poisoned(evil, query)))
        if b["garbage"]:
            junk = os.urandom(30)
            if b["garbage"] == "same_id":
                junk = query.id.to_bytes(2, "big") + junk
            frames.append((0, junk))
            frames.append((b["garbage_delay"], good))
        else:
            frames.append((0, good))
        return frames

    @staticmethod
    def _with_id(wire, new_id):
        return new_id.to_bytes(2, "big") + wire[2:]

    def _encode(self, resp, query, b):
        if resp is None or isinstance(resp, (bytes, bytearray)):
            return resp
        if b["keepalive"] is not None and query.edns >= 0 and resp.edns >= 0:
            resp.use_edns(0, resp.ednsflags, resp.payload, options=list(resp.options) + [
                dns.edns.GenericOption(_KEEPALIVE_OPTION, b["keepalive"].to_bytes(2, "big"))])
        # Over TCP the only limit is the 16-bit frame length; dnspython would
        # otherwise cap a response at the query's EDNS payload size.
        return resp.to_wire(max_size=65535, want_shuffle=False)

    @staticmethod
    def _poisoned(question_from, query):
        """An answer with `question_from`'s question claiming qname A 6.6.6.6."""
        resp = dns.message.make_response(question_from, recursion_available=True,
                                         our_payload=EDNS_PAYLOAD)
        resp.answer.append(dns.rrset.from_text(query.question[0].name, TTL, "IN", "A",
                                               POISON_A))
        return resp.to_wire(max_size=65535, want_shuffle=False)

    # -- records (called on the loop thread) ------------------------------------------

    def _on_connection(self, conn):
        self._conns.add(conn)
        with self._lock:
            self._connections += 1
            return self._connections - 1

    def _on_connection_lost(self, conn):
        self._conns.discard(conn)

    def _on_handshake(self, conn, reused):
        with self._lock:
            self._handshakes += 1
            if reused:
                self._resumed += 1
            self._tls_versions.append(conn.tls.version())

    def _on_handshake_failed(self, conn, exc):
        reason = getattr(exc, "reason", None) or str(exc)
        log.debug("connection %s: handshake failed: %s", conn.index, reason)
        with self._lock:
            self._handshake_errors.append(reason)

    def _on_sni(self, sslobj, server_name, ctx):
        with self._lock:
            self._sni.append(server_name)
        return None

    def _count_app_bytes(self, n):
        with self._lock:
            self._app_bytes += n

    def _record_query(self, conn, wire):
        try:
            msg = dns.message.from_wire(wire)
        except Exception as e:
            log.debug("connection %s: unparseable query: %r", conn.index, e)
            msg = None
        with self._lock:
            self._raw.append(wire)
            self._queries.append(msg)
            self._query_conns.append(conn.index)
            self._query_times.append(time.monotonic())
        return msg

    def _error(self, text):
        with self._lock:
            self.errors.append(text)

    # -- public counters ----------------------------------------------------------

    def reset_counters(self):
        """Forget every count and record (not the behaviour, not open connections)."""
        with self._lock:
            self._connections = 0
            self._handshakes = 0
            self._resumed = 0
            self._app_bytes = 0
            self._queries = []
            self._raw = []
            self._query_conns = []
            self._query_times = []
            self._sni = []
            self._handshake_errors = []
            self._tls_versions = []

    def _get(self, attr):
        with self._lock:
            v = getattr(self, attr)
            return list(v) if isinstance(v, list) else v

    connections = property(lambda self: self._get("_connections"),
                           doc="TCP connections accepted")
    handshakes = property(lambda self: self._get("_handshakes"),
                          doc="TLS handshakes completed")
    resumed_handshakes = property(lambda self: self._get("_resumed"),
                                  doc="completed handshakes that resumed a session")
    app_bytes = property(lambda self: self._get("_app_bytes"),
                         doc="decrypted bytes received, all connections")
    queries = property(lambda self: self._get("_queries"),
                       doc="every query received, parsed (None if unparseable), in order")
    raw_queries = property(lambda self: self._get("_raw"),
                           doc="wire bytes of every query, aligned with `queries`")
    query_connections = property(lambda self: self._get("_query_conns"),
                                 doc="index of the connection each query came on")
    query_times = property(lambda self: self._get("_query_times"),
                           doc="time.monotonic() at which each query was read")
    sni_names = property(lambda self: self._get("_sni"),
                         doc="SNI name of each ClientHello (None when the client sent none)")
    handshake_errors = property(lambda self: self._get("_handshake_errors"),
                                doc="why failed handshakes failed (e.g. the client's alert)")
    tls_versions = property(lambda self: self._get("_tls_versions"),
                            doc="negotiated protocol of each completed handshake")

    @property
    def open_connections(self):
        """Connections currently open (as seen by the loop thread)."""
        if self._loop is None:
            return 0

        async def count():
            return sum(1 for c in self._conns if not c.closed)
        return self._call(count())

    def wait_until(self, predicate, timeout=2.0):
        """Poll predicate(self) until true; return its last value (falsy on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            v = predicate(self)
            if v or time.monotonic() >= deadline:
                return v
            time.sleep(0.01)

    def wait_queries(self, n, timeout=2.0):
        """Wait until at least n queries were received; return whether they were."""
        return bool(self.wait_until(lambda s: len(s.raw_queries) >= n, timeout))
