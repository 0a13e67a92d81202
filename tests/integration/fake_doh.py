"""A scriptable DNS-over-HTTPS server (RFC 8484 over HTTP/2) that misbehaves on request.

The DoH counterpart of fake_upstream.py: it runs inside the test process on
a background thread with its own asyncio event loop, answers from local data
(fake_upstream.default_responder: A 192.0.2.1, AAAA 2001:db8::1, "big*" 100
A records, "nx*" NXDOMAIN, anything else NODATA), never forwards, and records
what it saw. TLS runs on memory BIOs like fake_upstream's, HTTP/2 is
python3-h2's server side, and h2wire.FrameReader cuts the stream into frames
first (see h2wire.py for why). Every stream is served by its own task, so a
slow or stalled stream never holds up another.

Normal behaviour: POST with content-type application/dns-message, or GET
with ?dns=<base64url without padding>, on `path`; the answer is 200 with
content-type application/dns-message, content-length and the DNS answer,
whose ID is the query's (0 from a DoH client). Wrong path: 404; a method
other than GET and POST: 405; a POST of another content-type: 415; a POST
body over 65,535 bytes: 413; no or undecodable dns=, an empty or unparseable
query: 400. Each of those is recorded like any request.

Behaviours (keyword arguments of the constructor and of set(); all default
to a well-behaved server, see DEFAULT_BEHAVIOUR). Durations are in seconds,
as in fake_upstream.

  responder         callable(query Message) -> Message | bytes | None (None:
                    never answered, like "stall"). Default: default_responder.
  path              the path answered (default "/dns-query").
  action            what every request gets (see ACTIONS):
                      "ok"                  the answer (default)
                      an int (500, 503...)  that status, text/plain body
                      "refuse"              RST_STREAM REFUSED_STREAM (unprocessed: safe to retry)
                      "reset"               RST_STREAM INTERNAL_ERROR
                      "stall"               never answered; the stream stays open
                      "wrong_content_type"  200, text/html, with the right DNS answer as body
                      "no_content_type"     200 with the right answer, no content-type
                      "big_body"            200, dns-message, the answer padded with zeros
                                            to big_body_size (70,000) bytes, no content-length
                      "garbage"             200, dns-message, a body that does not parse
                      "empty"               200, dns-message, an empty body
                      "wrong_question"      200, an answer for "evil.<qname>" claiming
                                            qname A 6.6.6.6
                      "wrong_id"            200, the answer with ID xor 0x5a5a
  rules             {pattern: action}, checked in order before `action`, first
                    match wins. A pattern is a regular expression searched in
                    the query name (lower case, absolute: "www.example.com.")
                    or a callable(qname) -> bool.
  refuse_first      K: the next K requests (on any connection; counted from the
                    moment it is set) are refused with REFUSED_STREAM.
  delay             seconds before each response or reset, or a
                    callable(Request) -> seconds. Streams wait independently.
                    (A bad request's 4xx goes at once.)
  age               an Age header value (int) on every 200 answer; None: none.
  headers           extra (name, value) pairs on every response.
  big_body_size     the body size of "big_body".
  max_concurrent_streams
                    SETTINGS_MAX_CONCURRENT_STREAMS sent (default 100; None:
                    not sent, i.e. unlimited). Changing it sends a new SETTINGS
                    frame on every open connection too.
  over_limit        what a stream opened beyond that limit gets (the fake
                    enforces the value last sent, acknowledged or not, as
                    nghttp2 does): "refuse" (RST_STREAM REFUSED_STREAM),
                    "protocol_error" (RST_STREAM PROTOCOL_ERROR) or "serve".
  goaway_after      N: per connection, when the N-th stream opens, send GOAWAY
                    with last_stream_id = that stream; the N streams are
                    served, later ones are recorded as "unprocessed" and never
                    answered. N=0: GOAWAY(0) right after the server's SETTINGS.
  goaway_error      the GOAWAY's error code (default 0, NO_ERROR).
  goaway_close      after a GOAWAY, close (close_notify, FIN) once the streams
                    it covers are done (default); False: wait for the client.
  silent            every connection (open or new, after its TLS handshake)
                    plays dead: frames are read and counted but not processed,
                    nothing is sent (no PING ACK, no answer, no WINDOW_UPDATE,
                    no idle close), TCP stays open. To the client that is a hung
                    process whose kernel still takes bytes in; the fake reads
                    them only to count them. set(silent=False) processes what
                    arrived meanwhile and sends what was held.
  silent_after      N: per connection, once N requests are complete, process
                    nothing more (the N are still answered); forever.
  ping_ack          False: PINGs are counted but not acknowledged (everything
                    else as usual).
  idle_timeout      seconds with no stream open after which the server closes
                    the connection, per idle_close; None: never.
  idle_close        "goaway" (GOAWAY NO_ERROR, then close_notify and FIN),
                    "notify" (close_notify and FIN), "fin" (FIN alone) or
                    "reset" (TCP RST).
  stall_handshake   accept TCP, never speak TLS.

Constructor only: cert, key, host, port, alpn (ALPN protocols offered, default
("h2",); None or () offers none; ("http/1.1",) tests a client's refusal: the
fake speaks HTTP/2 whatever was negotiated, and records it), session_tickets.

Lifecycle: start(); stop() drops everything abruptly (start() again rebinds
the same port); drop_connections(mode) closes the open connections ("goaway",
"notify", "fin" or "reset") and keeps listening.

What it records (properties return snapshots; see Request, Connection and
ClientReset for the fields): requests, connections, client_resets,
resets_after_response, names(), max_open_streams, limit_exceeded, pings,
protocol_errors, handshakes, handshake_errors, sni_names; wait_requests(n),
wait_until(predicate). `errors` lists failures of the fake itself.
"""

import asyncio
import base64
import binascii
import collections
import copy
import dataclasses
import fcntl
import logging
import re
import socket
import ssl
import sys
import termios
import threading
import time
import urllib.parse

import dns.message
import dns.name
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

import h2wire
from fake_plain import poisoned
from fake_upstream import LINGER_SECONDS, LoopServer, default_responder

log = logging.getLogger("fake_doh")

DNS_MESSAGE = "application/dns-message"
MAX_BODY = 65535  # a longer POST body cannot be a DNS message: 413, and not kept whole
PADDING_OPTION = 12  # RFC 7830

ACTIONS = ("ok", "refuse", "reset", "stall", "wrong_content_type", "no_content_type",
           "big_body", "garbage", "empty", "wrong_question", "wrong_id")
OVER_LIMIT = ("refuse", "protocol_error", "serve")
IDLE_CLOSES = ("goaway", "notify", "fin", "reset")
CLOSE_MODES = IDLE_CLOSES

DEFAULT_BEHAVIOUR = {
    "responder": None,
    "path": "/dns-query",
    "action": "ok",
    "rules": (),
    "refuse_first": 0,
    "delay": 0,
    "age": None,
    "headers": (),
    "big_body_size": 70000,
    "max_concurrent_streams": 100,
    "over_limit": "refuse",
    "goaway_after": None,
    "goaway_error": h2wire.NO_ERROR,
    "goaway_close": True,
    "silent": False,
    "silent_after": None,
    "ping_ack": True,
    "idle_timeout": None,
    "idle_close": "goaway",
    "stall_handshake": False,
}

# A header that promises a question and an answer, then ends inside the
# question's first label: no DNS parser accepts it.
GARBAGE = bytes.fromhex("0000818000010001000000000361")


@dataclasses.dataclass
class Request:
    """One stream the client opened, as the fake saw and handled it."""
    conn: int               # connection index, 0 for the first accepted
    stream_id: int
    time: float             # time.monotonic() when its HEADERS arrived
    headers: list           # every (name, value) in HEADERS, in order, pseudo-headers included
    method: str = None
    path: str = None        # :path as sent, query string included
    scheme: str = None
    authority: str = None
    body: bytes = b""       # POST body (at most MAX_BODY + 1 bytes kept)
    dns_param: str = None   # GET: the dns= value exactly as sent
    wire: bytes = None      # the DNS query from the body or dns=; None if absent or
                            # undecodable, and for a stream reset before its request ended
                            # (over the stream limit, or by the client)
    query: object = None    # dns.message.Message parsed from wire, None if it did not parse
    over_limit: str = None  # "acked": opened beyond a stream limit the client had
                            # acknowledged (a client bug); "pending": beyond one sent
                            # but not acknowledged yet; None: within the limit
    action: object = None   # what the fake chose (an ACTIONS string, or an int status)
    outcome: str = "pending"  # "pending", "answered" (response complete), "refused" /
                              # "reset" (we sent RST_STREAM), "stalled", "unprocessed"
                              # (after our GOAWAY), "client_reset"
    status: int = None      # HTTP status sent
    reset_code: int = None  # RST_STREAM error code sent by the fake
    done_time: float = None  # time.monotonic() when the response ended or the stream was reset

    def header(self, name):
        """The first value of header `name` (lower case), or None."""
        for n, v in self.headers:
            if n == name:
                return v
        return None

    content_type = property(lambda self: self.header("content-type"))
    accept = property(lambda self: self.header("accept"))
    user_agent = property(lambda self: self.header("user-agent"))

    @property
    def id(self):
        """The DNS ID on the wire (None without a decodable query)."""
        return int.from_bytes(self.wire[:2], "big") if self.wire and len(self.wire) >= 2 else None

    @property
    def qname(self):
        """Lower case, absolute ("www.example.com."), or None."""
        if self.query is None or not self.query.question:
            return None
        return self.query.question[0].name.to_text().lower()

    @property
    def qtype(self):
        if self.query is None or not self.query.question:
            return None
        return int(self.query.question[0].rdtype)

    @property
    def options(self):
        """EDNS options of the query (dnspython Option objects)."""
        return list(self.query.options) if self.query is not None else []

    @property
    def padding(self):
        """Length of the EDNS padding option's data, None without one."""
        for o in self.options:
            if o.otype == PADDING_OPTION:
                return len(o.to_wire())
        return None


@dataclasses.dataclass
class ClientReset:
    """An RST_STREAM frame the client sent."""
    conn: int
    stream_id: int
    error_code: int
    after_response: bool  # the fake had already sent this stream's complete response


@dataclasses.dataclass
class Connection:
    """One accepted TCP connection."""
    index: int
    peer: tuple
    sni: str = None
    alpn: str = None          # the ALPN protocol negotiated, None if none
    tls_version: str = None   # None until the handshake completed
    requests: int = 0         # streams the client opened (HEADERS received)
    max_open_streams: int = 0  # most streams open at once, the one being opened included
    limit_exceeded: int = 0   # streams opened beyond a limit the client had acknowledged
    settings_acks: int = 0    # SETTINGS ACKs from the client
    client_settings: dict = dataclasses.field(default_factory=dict)  # {code: value}, latest
    frames: dict = dataclasses.field(default_factory=dict)  # frame type name -> count received
    pings: int = 0            # PINGs (not ACKs) received
    ping_acks_sent: int = 0
    resets: list = dataclasses.field(default_factory=list)  # ClientReset, in order
    goaways_received: list = dataclasses.field(default_factory=list)  # (last_stream_id, code)
    goaway_sent: int = None   # last_stream_id of the GOAWAY we sent
    silent: bool = False      # silent_after was reached
    idle_closed: bool = False
    protocol_error: str = None  # what h2 objected to in the client's frames
    closed_by: str = None     # "client" or "server" (None while open)
    open: bool = True


def _matches(pattern, qname):
    if callable(pattern):
        return bool(pattern(qname))
    return qname is not None and re.search(pattern, qname) is not None


def _check_action(action):
    if isinstance(action, bool) or not (action in ACTIONS or
                                        (isinstance(action, int) and 100 <= action <= 599)):
        raise ValueError(f"unknown fake_doh action {action!r}: one of {ACTIONS} or a status")


class _Conn(asyncio.Protocol):
    """One connection: a TLS pump, a frame reader, an h2 server connection.

    Lives on the event loop thread; talks to the FakeDoH to read behaviour
    and to record what it saw.
    """

    def __init__(self, server):
        self.srv = server
        self.rec = None           # Connection record
        self.transport = None
        self.tls = None
        self.bio_in = ssl.MemoryBIO()
        self.bio_out = ssl.MemoryBIO()
        self.handshaken = False
        self.h2 = None
        self.reader = h2wire.FrameReader(preface=True)
        self.closed = False
        self.streams = {}         # stream id -> Request, open and being served
        self.ignored = {}         # stream id -> Request, after our GOAWAY: decoded, never served
        self.responded = set()    # stream ids whose response went out complete
        self.body_out = {}        # stream id -> (memoryview of body left, Request)
        self.tasks = {}           # stream id -> task serving it
        self.backlog = []         # frames read while silent, to process later
        self.held_out = bytearray()  # h2 bytes held while silent
        self.frozen = False       # silent_after reached
        self.processed = 0        # streams accepted for processing
        self.completed = 0        # requests complete (END_STREAM received)
        self.limit = None         # stream limit last advertised (None: unlimited)
        self.unacked = collections.deque()  # limits sent, not yet acknowledged
        self.acked_limit = None   # limit the client acknowledged last
        self.acked = False        # whether it acknowledged any SETTINGS yet
        self.goaway_last = None
        self.close_after_goaway = False
        self.idle_handle = None
        self.linger_handle = None

    # -- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        self.rec = self.srv._on_connection(self, transport.get_extra_info("peername"))
        if self.srv._snapshot()["stall_handshake"]:
            return  # self.tls stays None: incoming bytes are dropped
        self.tls = self.srv._ctx.wrap_bio(self.bio_in, self.bio_out, server_side=True)

    def data_received(self, data):
        if self.closed or self.tls is None:
            return
        try:
            self.bio_in.write(data)
            if not self.handshaken and not self._handshake():
                return
            self._read_app_data()
        except Exception as e:  # a bug in this file must show up in the test
            self.srv._error(f"connection {self.rec.index}: {e!r}")
            log.exception("fake DoH connection %s failed", self.rec.index)
            self.abort()

    def eof_received(self):
        self._closed_by("client")
        return False  # no half-open connections

    def connection_lost(self, exc):
        self._closed_by("client")
        self.closed = True
        self._cancel_timers()
        self.srv._on_connection_lost(self)

    def _closed_by(self, who):
        with self.srv._lock:
            if self.rec.closed_by is None:
                self.rec.closed_by = who

    # -- TLS pump (as in fake_upstream) ------------------------------------------

    def _flush_tls(self):
        out = self.bio_out.read()
        if out and not self.closed:
            self.transport.write(out)

    def _handshake(self):
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush_tls()
            return False
        except (ssl.SSLError, OSError) as e:
            self._flush_tls()  # lets our alert reach the peer
            self.srv._on_handshake_failed(e)
            self.abort()
            return False
        self.handshaken = True
        self._flush_tls()
        self.srv._on_handshake(self)
        self._start_h2()
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
                log.debug("connection %s: TLS read failed: %r", self.rec.index, e)
                self.abort()
                return
            if not chunk:  # the client's close_notify
                self._closed_by("client")
                self.close("notify")
                return
            for fr in self.reader.feed(chunk):
                if self.closed:
                    break
                self._on_frame(fr)
        self._flush_tls()  # TLS 1.3 tickets and key updates are written during reads
        self._out()

    def send(self, data):
        if self.closed or not self.handshaken:
            return
        self.tls.write(data)
        self._flush_tls()

    def close(self, mode="notify"):
        """Close per `mode`: "notify" (close_notify then FIN), "fin" or "reset"."""
        if self.closed:
            return
        self._closed_by("server")
        if mode == "reset":
            self.abort(reset=True)
            return
        self._out()
        if self.handshaken and mode != "fin":
            try:
                self.tls.unwrap()  # sends close_notify, does not wait for the peer's
            except (ssl.SSLError, OSError):
                pass
            self._flush_tls()
        self.closed = True
        self._cancel_timers()
        # FIN, then keep reading (and dropping) until the peer closes too: a
        # close with unread bytes would be a RST that can destroy what we sent.
        try:
            self.transport.write_eof()
        except (OSError, NotImplementedError):
            self.transport.close()
            return
        self.linger_handle = self.srv._loop.call_later(LINGER_SECONDS, self.transport.close)

    def abort(self, reset=False):
        """Drop the connection now; reset=True makes it a TCP RST after what was sent."""
        self._closed_by("server")
        self.closed = True
        self._cancel_timers()
        if reset:
            self.srv._background(self._reset_when_drained())
            return
        self.transport.abort()

    async def _reset_when_drained(self):
        # As in fake_upstream: wait for the kernel's send queue to empty, so
        # "send a GOAWAY, then RST" does not lose the GOAWAY.
        sock = self.transport.get_extra_info("socket")
        deadline = time.monotonic() + 1.0
        try:
            while time.monotonic() < deadline and not self.transport.is_closing():
                buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
                if self.transport.get_write_buffer_size() == 0 and \
                        int.from_bytes(buf, sys.byteorder) == 0:
                    break
                await asyncio.sleep(0.005)
            if not self.transport.is_closing():
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        except OSError:
            pass
        self.transport.abort()

    def _cancel_timers(self):
        self._cancel_idle()
        if self.linger_handle is not None:
            self.linger_handle.cancel()
            self.linger_handle = None
        for t in list(self.tasks.values()):
            t.cancel()

    # -- HTTP/2 -----------------------------------------------------------------

    def _start_h2(self):
        b = self.srv._snapshot()
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8"))
        # No MAX_CONCURRENT_STREAMS for h2 itself: it would kill the whole
        # connection on a stream too many. The limit the client sees is in the
        # SETTINGS frame written below, and this class enforces it per stream.
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 65536})
        self.h2.initiate_connection()
        self.h2.data_to_send()  # replaced by our own SETTINGS frame
        values = dict(self.h2.local_settings.items())
        self.limit = b["max_concurrent_streams"]
        if self.limit is not None:
            values[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = self.limit
        self.unacked.append(self.limit)
        self._out(h2wire.settings(values))
        if b["goaway_after"] == 0:
            self._send_goaway(0, b)
            if self.close_after_goaway:
                self.close("notify")
                return
        self._arm_idle()

    def advertise_limit(self, limit):
        """Send a new SETTINGS_MAX_CONCURRENT_STREAMS (None: lift the limit)."""
        if self.closed or self.h2 is None:
            return
        self.limit = limit
        self.unacked.append(limit)
        value = (1 << 31) - 1 if limit is None else limit
        self._out(h2wire.settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: value}))

    def _silent(self):
        return self.srv._snapshot()["silent"]

    def _out(self, raw=b""):
        """Send what h2 has to send, then `raw` (a frame of our own)."""
        if self.closed or self.h2 is None:
            return
        data = self.h2.data_to_send() + raw
        if self._silent():
            self.held_out += data
            return
        if self.held_out:
            data, self.held_out = bytes(self.held_out) + data, bytearray()
        if data:
            self.send(data)

    def _on_frame(self, fr):
        with self.srv._lock:
            rec = self.rec
            rec.frames[fr.name] = rec.frames.get(fr.name, 0) + 1
            if fr.type == h2wire.PING and not fr.ack:
                rec.pings += 1
            elif fr.type == h2wire.RST_STREAM:
                r = ClientReset(rec.index, fr.stream_id, fr.error_code(),
                                fr.stream_id in self.responded)
                rec.resets.append(r)
                self.srv._client_resets.append(r)
            elif fr.type == h2wire.GOAWAY:
                rec.goaways_received.append((fr.last_stream_id(), fr.error_code()))
        if self.frozen or self._silent():
            self.backlog.append(fr)
            return
        self._process(fr)

    def resume(self):
        """Process the frames read while silent, send what was held."""
        if self.closed or self.h2 is None:
            return
        while self.backlog and not self.frozen and not self.closed:
            self._process(self.backlog.pop(0))
        self._out()
        if not self.streams:
            self._arm_idle()

    def _process(self, fr):
        b = self.srv._snapshot()
        if fr.type == h2wire.GOAWAY:
            return  # recorded; h2 would refuse every frame after it
        if fr.type == h2wire.PING and not fr.ack and not b["ping_ack"]:
            return
        if fr.type == h2wire.SETTINGS and fr.ack:
            self.acked = True
            self.acked_limit = self.unacked.popleft() if self.unacked else self.acked_limit
            with self.srv._lock:
                self.rec.settings_acks += 1
        try:
            events = self.h2.receive_data(fr.raw)
        except h2.exceptions.ProtocolError as e:
            # The client broke HTTP/2: h2 has queued a GOAWAY; send it and go.
            with self.srv._lock:
                self.rec.protocol_error = f"{type(e).__name__}: {e}"
            log.debug("connection %s: %s", self.rec.index, self.rec.protocol_error)
            self.close("notify")
            return
        for ev in events:
            if self.closed:
                return
            self._on_event(ev, b)

    def _on_event(self, ev, b):
        if isinstance(ev, h2.events.RequestReceived):
            self._on_request(ev, b)
        elif isinstance(ev, h2.events.DataReceived):
            req = self.streams.get(ev.stream_id) or self.ignored.get(ev.stream_id)
            if req is not None and len(req.body) <= MAX_BODY:
                req.body += ev.data[:MAX_BODY + 1 - len(req.body)]
            try:
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            except h2.exceptions.NoSuchStreamError:
                pass  # the stream is gone; h2 credited the connection window itself
        elif isinstance(ev, h2.events.StreamEnded):
            self._on_request_end(ev.stream_id)
        elif isinstance(ev, h2.events.StreamReset):
            self._on_stream_reset(ev)
        elif isinstance(ev, h2.events.WindowUpdated):
            self._pump_bodies()
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            with self.srv._lock:
                for code, change in ev.changed_settings.items():
                    self.rec.client_settings[int(code)] = change.new_value
            self._pump_bodies()  # INITIAL_WINDOW_SIZE may have grown
        elif isinstance(ev, h2.events.PingReceived):
            with self.srv._lock:
                self.rec.ping_acks_sent += 1

    def _on_request(self, ev, b):
        sid = ev.stream_id
        req = Request(conn=self.rec.index, stream_id=sid, time=time.monotonic(),
                      headers=list(ev.headers))
        for name, value in req.headers:
            if name == ":method":
                req.method = value
            elif name == ":path":
                req.path = value
            elif name == ":scheme":
                req.scheme = value
            elif name == ":authority":
                req.authority = value
        self._cancel_idle()
        with self.srv._lock:
            self.srv._requests.append(req)
            self.rec.requests += 1
        if self.goaway_last is not None and sid > self.goaway_last:
            req.outcome = "unprocessed"
            self.ignored[sid] = req
            return
        self.streams[sid] = req
        n_open = len(self.streams)
        with self.srv._lock:
            self.rec.max_open_streams = max(self.rec.max_open_streams, n_open)
            if self.acked and self.acked_limit is not None and n_open > self.acked_limit:
                req.over_limit = "acked"
                self.rec.limit_exceeded += 1
            elif self.limit is not None and n_open > self.limit:
                req.over_limit = "pending"
        if req.over_limit and b["over_limit"] != "serve":
            self._reset(req, h2wire.REFUSED_STREAM if b["over_limit"] == "refuse"
                        else h2wire.PROTOCOL_ERROR)
            return
        self.processed += 1
        if b["goaway_after"] is not None and self.goaway_last is None and \
                self.processed >= b["goaway_after"]:
            self._send_goaway(sid, b)

    def _send_goaway(self, last, b):
        self.goaway_last = last
        self.close_after_goaway = b["goaway_close"]
        with self.srv._lock:
            self.rec.goaway_sent = last
        self._out(h2wire.goaway(last, b["goaway_error"]))

    def _on_request_end(self, sid):
        b = self.srv._snapshot()
        if sid in self.ignored:  # after our GOAWAY: only for the record
            self._decode(self.ignored.pop(sid), b)
            return
        req = self.streams.get(sid)
        if req is None:
            return  # already reset
        error = self._decode(req, b)
        self.completed += 1
        if b["silent_after"] is not None and self.completed >= b["silent_after"]:
            self.frozen = True
            with self.srv._lock:
                self.rec.silent = True
        action = error or self.srv._choose(req, b)
        req.action = action
        task = self.srv._loop.create_task(self._serve(req, action, b))
        self.tasks[sid] = task
        task.add_done_callback(lambda t, sid=sid: self._task_done(sid, t))

    def _decode(self, req, b):
        """Fill req.wire and req.query; return an HTTP error status, or None."""
        path, _, qs = (req.path or "").partition("?")
        if path != b["path"]:
            return 404
        if req.method == "GET":
            values = urllib.parse.parse_qs(qs, keep_blank_values=True).get("dns")
            if not values:
                return 400
            req.dns_param = values[0]
            if not re.fullmatch(r"[A-Za-z0-9_-]*=*", values[0]):
                return 400  # not base64url (padding is tolerated, and recorded in dns_param)
            try:
                req.wire = base64.b64decode(values[0] + "=" * (-len(values[0]) % 4),
                                            altchars=b"-_", validate=True)
            except (binascii.Error, ValueError):
                return 400
        elif req.method == "POST":
            if req.content_type != DNS_MESSAGE:
                return 415
            if len(req.body) > MAX_BODY:
                return 413
            req.wire = req.body
        else:
            return 405
        try:
            req.query = dns.message.from_wire(req.wire)
        except Exception as e:
            log.debug("connection %s stream %s: unparseable query: %r",
                      self.rec.index, req.stream_id, e)
            return 400
        return None if req.query.question else 400

    def _task_done(self, sid, task):
        if self.tasks.get(sid) is task:
            del self.tasks[sid]
        if not task.cancelled() and task.exception() is not None:
            e = task.exception()
            self.srv._error(f"connection {self.rec.index} stream {sid}: {e!r}")
            log.error("fake DoH stream task failed", exc_info=e)
            self.abort()

    async def _serve(self, req, action, b):
        if action == "stall":
            self._set(req, outcome="stalled")
            return
        delay = 0
        if req.query is not None:  # HTTP errors for bad requests go at once
            delay = b["delay"](req) if callable(b["delay"]) else b["delay"]
        if delay:
            await asyncio.sleep(delay)
        if self.closed or self.streams.get(req.stream_id) is not req:
            return  # reset by the client meanwhile, or the connection went
        if action == "refuse":
            self._reset(req, h2wire.REFUSED_STREAM)
            return
        if action == "reset":
            self._reset(req, h2wire.INTERNAL_ERROR)
            return
        resp = self._response(req, action, b)
        if resp is None:  # the responder chose not to answer
            self._set(req, outcome="stalled")
            return
        status, headers, body = resp
        self.h2.send_headers(req.stream_id, headers, end_stream=not body)
        self._set(req, status=status)
        if body:
            self.body_out[req.stream_id] = (memoryview(body), req)
            self._pump_bodies()
        else:
            self._finish(req, "answered")
        self._out()

    def _response(self, req, action, b):
        """(status, headers, body) for `action`, or None for no answer."""
        extra = [(str(n).lower(), str(v)) for n, v in b["headers"]]
        if isinstance(action, int):
            body = f"fake_doh: {action}\n".encode()
            return action, [(":status", str(action)), ("content-type", "text/plain"),
                            ("content-length", str(len(body)))] + extra, body
        q = req.query
        if action == "wrong_question":
            name = q.question[0].name
            evil = dns.message.make_query(dns.name.Name((b"evil",) + name.labels),
                                          q.question[0].rdtype, id=q.id)
            wire = poisoned(evil, name)
        else:
            resp = (b["responder"] or default_responder)(q)
            if resp is None:
                return None
            wire = resp if isinstance(resp, (bytes, bytearray)) else \
                resp.to_wire(max_size=65535, want_shuffle=False)
        ctype, length = DNS_MESSAGE, True
        if action == "wrong_id":
            wire = (q.id ^ 0x5A5A).to_bytes(2, "big") + wire[2:]
        elif action == "wrong_content_type":
            ctype = "text/html; charset=utf-8"
        elif action == "no_content_type":
            ctype = None
        elif action == "big_body":
            wire = wire + bytes(max(0, b["big_body_size"] - len(wire)))
            length = False  # the client must count, not trust a header
        elif action == "garbage":
            wire = GARBAGE
        elif action == "empty":
            wire = b""
        headers = [(":status", "200")]
        if ctype:
            headers.append(("content-type", ctype))
        if length:
            headers.append(("content-length", str(len(wire))))
        if b["age"] is not None:
            headers.append(("age", str(b["age"])))
        return 200, headers + extra, bytes(wire)

    def _pump_bodies(self):
        """Send as much of each pending body as flow control allows."""
        for sid in list(self.body_out):
            mv, req = self.body_out[sid]
            while len(mv):
                n = min(self.h2.local_flow_control_window(sid),
                        self.h2.max_outbound_frame_size, len(mv))
                if n <= 0:
                    break
                self.h2.send_data(sid, bytes(mv[:n]), end_stream=n == len(mv))
                mv = mv[n:]
            if len(mv):
                self.body_out[sid] = (mv, req)
            else:
                del self.body_out[sid]
                self._finish(req, "answered")

    def _reset(self, req, code):
        self.h2.reset_stream(req.stream_id, code)
        self._set(req, reset_code=code)
        self._finish(req, "refused" if code == h2wire.REFUSED_STREAM else "reset")
        self._out()

    def _set(self, req, **fields):
        with self.srv._lock:
            for k, v in fields.items():
                setattr(req, k, v)

    def _finish(self, req, outcome):
        self._set(req, outcome=outcome, done_time=time.monotonic())
        self.streams.pop(req.stream_id, None)
        if outcome == "answered":
            self.responded.add(req.stream_id)
        self._stream_closed()

    def _on_stream_reset(self, ev):
        req = self.streams.pop(ev.stream_id, None)
        self.ignored.pop(ev.stream_id, None)
        self.body_out.pop(ev.stream_id, None)
        task = self.tasks.pop(ev.stream_id, None)
        if task is not None:
            task.cancel()
        if req is not None:
            self._set(req, outcome="client_reset" if ev.remote_reset else "reset",
                      done_time=time.monotonic())
        self._stream_closed()

    def _stream_closed(self):
        if self.goaway_last is not None and self.close_after_goaway and \
                not any(sid <= self.goaway_last for sid in self.streams):
            self.close("notify")
            return
        if not self.streams:
            self._arm_idle()

    # -- idle close ------------------------------------------------------------------

    def _arm_idle(self):
        self._cancel_idle()
        timeout = self.srv._snapshot()["idle_timeout"]
        if timeout is not None and not self.closed:
            self.idle_handle = self.srv._loop.call_later(timeout, self._on_idle)

    def _cancel_idle(self):
        if self.idle_handle is not None:
            self.idle_handle.cancel()
            self.idle_handle = None

    def _on_idle(self):
        self.idle_handle = None
        if self.closed or self.streams or self.frozen or self._silent():
            return
        b = self.srv._snapshot()
        with self.srv._lock:
            self.rec.idle_closed = True
        if b["idle_close"] == "goaway":
            self._send_goaway(self.h2.highest_inbound_stream_id, dict(b, goaway_error=0))
            self.close("notify")
        else:
            self.close(b["idle_close"])


class FakeDoH(LoopServer):
    """A DoH server on a background thread; see the module docstring.

    Counters and records are safe to read from the test thread at any time;
    list attributes return snapshots (copies).
    """
    what = "fake DoH"

    def __init__(self, cert, key, *, host="127.0.0.1", port=0, alpn=("h2",),
                 session_tickets=True, **behaviour):
        self.cert, self.key, self.host, self.port = cert, key, host, port
        self.alpn = tuple(alpn or ())
        ctx = self.server_context(cert, key, session_tickets=session_tickets, alpn=self.alpn)
        ctx.sni_callback = self._on_sni
        self._ctx = ctx
        self._lock = threading.Lock()
        self._behaviour = dict(DEFAULT_BEHAVIOUR)
        self._loop = None
        self._thread = None
        self._server = None
        self._conns = set()
        self._bg_tasks = set()
        self._refused_first = 0
        self.errors = []  # failures of the fake itself; the fixture fails the test on any
        self.reset_counters()
        self.set(**behaviour)

    # -- lifecycle ------------------------------------------------------------

    def _new_conn(self):
        return _Conn(self)

    async def _close_all(self):
        self._server.close()
        tasks = [t for c in self._conns for t in c.tasks.values()] + list(self._bg_tasks)
        for c in list(self._conns):
            c._closed_by("server")
            c.transport.abort()
            c.closed = True
            c._cancel_timers()
        for t in self._bg_tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
        await asyncio.sleep(0)

    def _background(self, coro):
        task = self._loop.create_task(coro)
        self._bg_tasks.add(task)
        task.add_done_callback(self._bg_tasks.discard)

    def _on_loop(self, fn):
        """Run fn() on the loop thread (now, if not started) and return its value."""
        if self._loop is None:
            return None

        async def go():
            return fn()
        return self._call(go())

    def drop_connections(self, mode="goaway"):
        """Close every open connection but keep listening. `mode`: "goaway"
        (GOAWAY with the highest stream seen, then close_notify and FIN),
        "notify", "fin" or "reset"."""
        if mode not in CLOSE_MODES:
            raise ValueError(f"mode must be one of {CLOSE_MODES}")

        def go():
            for c in list(self._conns):
                if c.closed:
                    continue
                if mode == "goaway" and c.h2 is not None:
                    c._send_goaway(c.h2.highest_inbound_stream_id,
                                   dict(self._snapshot(), goaway_error=0))
                c.close("notify" if mode == "goaway" else mode)
        self._on_loop(go)

    # -- behaviour ---------------------------------------------------------------

    def set(self, **behaviour):
        """Change behaviour; applies to requests and connections from now on.

        A new max_concurrent_streams is also sent to open connections;
        silent=False makes silent connections process what they read meanwhile.
        """
        for k, v in behaviour.items():
            if k not in DEFAULT_BEHAVIOUR:
                raise TypeError(f"unknown FakeDoH behaviour {k!r}")
        if "rules" in behaviour:
            rules = behaviour["rules"]
            behaviour["rules"] = tuple(rules.items() if isinstance(rules, dict) else rules)
            for _, action in behaviour["rules"]:
                _check_action(action)
        if "action" in behaviour:
            _check_action(behaviour["action"])
        if behaviour.get("over_limit", "refuse") not in OVER_LIMIT:
            raise ValueError(f"over_limit must be one of {OVER_LIMIT}")
        if behaviour.get("idle_close", "goaway") not in IDLE_CLOSES:
            raise ValueError(f"idle_close must be one of {IDLE_CLOSES}")
        with self._lock:
            was_silent = self._behaviour["silent"]
            self._behaviour.update(behaviour)
            if "refuse_first" in behaviour:
                self._refused_first = 0
        if "max_concurrent_streams" in behaviour:
            limit = behaviour["max_concurrent_streams"]
            self._on_loop(lambda: [c.advertise_limit(limit) for c in list(self._conns)])
        if was_silent and not self._snapshot()["silent"]:
            self._on_loop(lambda: [c.resume() for c in list(self._conns)])

    def _snapshot(self):
        with self._lock:
            return dict(self._behaviour)

    def _choose(self, req, b):
        with self._lock:
            if self._refused_first < b["refuse_first"]:
                self._refused_first += 1
                return "refuse"
        for pattern, action in b["rules"]:
            if _matches(pattern, req.qname):
                return action
        return b["action"]

    # -- records (called on the loop thread) ------------------------------------------

    def _on_connection(self, conn, peer):
        self._conns.add(conn)
        with self._lock:
            rec = Connection(index=len(self._connections), peer=peer)
            self._connections.append(rec)
        return rec

    def _on_connection_lost(self, conn):
        self._conns.discard(conn)
        with self._lock:
            conn.rec.open = False

    def _on_handshake(self, conn):
        with self._lock:
            self._handshakes += 1
            conn.rec.tls_version = conn.tls.version()
            conn.rec.alpn = conn.tls.selected_alpn_protocol()

    def _on_handshake_failed(self, exc):
        reason = getattr(exc, "reason", None) or str(exc)
        with self._lock:
            self._handshake_errors.append(reason)

    def _on_sni(self, sslobj, server_name, ctx):
        with self._lock:
            self._sni.append(server_name)
            for c in self._conns:
                if c.tls is sslobj:
                    c.rec.sni = server_name
        return None

    def _error(self, text):
        with self._lock:
            self.errors.append(text)

    # -- public records ----------------------------------------------------------------

    def reset_counters(self):
        """Forget every record (not the behaviour; open connections keep
        updating their own records, which are no longer listed)."""
        with self._lock:
            self._connections = []
            self._requests = []
            self._client_resets = []
            self._handshakes = 0
            self._handshake_errors = []
            self._sni = []

    @property
    def requests(self):
        """Every stream opened (Request), in the order their HEADERS arrived."""
        with self._lock:
            return [copy.copy(r) for r in self._requests]

    @property
    def connections(self):
        """Every connection accepted (Connection), by index."""
        with self._lock:
            return [copy.deepcopy(c) for c in self._connections]

    @property
    def client_resets(self):
        """Every RST_STREAM from a client (ClientReset), in order."""
        with self._lock:
            return list(self._client_resets)

    @property
    def resets_after_response(self):
        """RST_STREAMs for streams whose response was complete: a client must send none."""
        return [r for r in self.client_resets if r.after_response]

    def names(self):
        """Every query name seen (lower case, absolute)."""
        return {r.qname for r in self.requests if r.qname is not None}

    max_open_streams = property(lambda self: max((c.max_open_streams for c in self.connections),
                                                 default=0),
                                doc="most streams open at once on any connection")
    limit_exceeded = property(lambda self: sum(c.limit_exceeded for c in self.connections),
                              doc="streams opened beyond an acknowledged limit, all connections")
    pings = property(lambda self: sum(c.pings for c in self.connections),
                     doc="PINGs received, all connections")
    protocol_errors = property(lambda self: [c.protocol_error for c in self.connections
                                             if c.protocol_error],
                               doc="what h2 objected to, per connection that broke HTTP/2")

    def _get(self, attr):
        with self._lock:
            v = getattr(self, attr)
            return list(v) if isinstance(v, list) else v

    handshakes = property(lambda self: self._get("_handshakes"), doc="TLS handshakes completed")
    handshake_errors = property(lambda self: self._get("_handshake_errors"),
                                doc="why failed handshakes failed")
    sni_names = property(lambda self: self._get("_sni"), doc="SNI of each ClientHello")

    @property
    def open_connections(self):
        """Connections currently open."""
        n = self._on_loop(lambda: sum(1 for c in self._conns if not c.closed))
        return n or 0

    def wait_until(self, predicate, timeout=2.0):
        """Poll predicate(self) until true; return its last value (falsy on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            v = predicate(self)
            if v or time.monotonic() >= deadline:
                return v
            time.sleep(0.01)

    def wait_requests(self, n, timeout=2.0):
        """Wait until at least n requests (streams) were seen; return whether they were."""
        return bool(self.wait_until(lambda s: len(s.requests) >= n, timeout))
