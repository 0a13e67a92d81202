"""A small synchronous DNS-over-HTTPS client (RFC 8484 over HTTP/2) for tests.

It tests fake_doh.py today and dotproxy's DoH listener later, so it does
what a test needs rather than what a good client does: several streams in
flight at once on one connection, GET and POST, any header or none, a PING,
an RST_STREAM, more streams than the server allows (ignore_stream_limit),
and a plain record of what came back: status, headers, body, the server's
RST_STREAM, GOAWAY and SETTINGS, and how the connection ended.

TLS is netutil.DoTClient's memory-BIO pump (so answers that arrive just
before a TCP reset are not lost, and a close_notify is told apart from a bare
FIN); HTTP/2 is python3-h2's client side behind h2wire.FrameReader, which
keeps a received GOAWAY from h2 (h2 would refuse the answers that may still
follow it). Every wait is bounded by a timeout.

    with DoHClient(port, ca_file=..., server_hostname="dns.example.test") as c:
        r = c.query(make_doh_query("www.example.", "A"))          # POST
        r = c.query(make_doh_query("www.example.", "A"), method="GET")
        sids = [c.send_query(make_doh_query(f"n{i}.example.")) for i in range(10)]
        answers = [c.response(s) for s in sids]
"""

import base64
import dataclasses
import socket
import time

import dns.message
import h2.config
import h2.connection
import h2.events

import h2wire
from netutil import DEFAULT_TIMEOUT, DoTClient, client_tls_context

DNS_MESSAGE = "application/dns-message"


class ALPNError(ConnectionError):
    """The server did not agree to HTTP/2 (require_h2=True)."""


def make_doh_query(name, rdtype="A", **kw):
    """A dnspython query with ID 0, as RFC 8484 §4.1 asks of DoH clients;
    keywords go to dns.message.make_query (use_edns, pad, ...)."""
    kw.setdefault("id", 0)
    return dns.message.make_query(name, rdtype, **kw)


def b64url(wire):
    """base64url without padding: the dns= parameter of a GET."""
    return base64.urlsafe_b64encode(wire).rstrip(b"=").decode("ascii")


@dataclasses.dataclass
class Response:
    """What came back on one stream."""
    stream_id: int
    status: int = None      # None until the response HEADERS
    headers: list = dataclasses.field(default_factory=list)  # (name, value), with pseudo-headers
    body: bytes = b""
    ended: bool = False     # END_STREAM received: the response is complete
    reset: int = None       # the server's RST_STREAM error code

    @property
    def done(self):
        return self.ended or self.reset is not None

    def header(self, name):
        for n, v in self.headers:
            if n == name:
                return v
        return None

    content_type = property(lambda self: self.header("content-type"))

    @property
    def message(self):
        """The body parsed as a DNS message (raises if it does not parse)."""
        return dns.message.from_wire(self.body)


class _H2Client(h2.connection.H2Connection):
    # h2 refuses to open more streams than the server allows; a test of the
    # server's enforcement needs to, so it can lift that check.
    ignore_stream_limit = False

    @property
    def open_outbound_streams(self):
        return 0 if self.ignore_stream_limit else super().open_outbound_streams


class DoHClient:
    """One HTTP/2 connection to a DoH server.

    alpn: protocols offered (default ("h2",); None offers none). With
    require_h2 the constructor raises ALPNError unless h2 was negotiated;
    `alpn_protocol` is what was. wait_settings: return from the constructor
    only once the server's SETTINGS arrived, so its stream limit is known.
    source: the local address to connect from (another 127.x address is
    another client to a server's per-address limits).
    """

    def __init__(self, port, *, host="127.0.0.1", ca_file=None, server_hostname=None,
                 verify=True, alpn=("h2",), require_h2=True, timeout=DEFAULT_TIMEOUT,
                 path="/dns-query", authority=None, user_agent=None, wait_settings=True,
                 ignore_stream_limit=False, source=None, max_version=None):
        ctx = client_tls_context(ca_file, verify=verify)
        if max_version:
            ctx.maximum_version = max_version
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        self.timeout = timeout
        self.path = path
        self.authority = authority or server_hostname or host
        self.user_agent = user_agent
        self.pipe = DoTClient(port, host=host, context=ctx, server_hostname=server_hostname,
                              verify=verify, timeout=timeout, source=source)
        self.alpn_protocol = self.pipe.tls.selected_alpn_protocol()
        if require_h2 and self.alpn_protocol != "h2":
            self.pipe.close()
            raise ALPNError(f"server negotiated ALPN {self.alpn_protocol!r}, not h2")
        self.h2 = _H2Client(h2.config.H2Configuration(client_side=True,
                                                      header_encoding="utf-8"))
        self.h2.ignore_stream_limit = ignore_stream_limit
        self.reader = h2wire.FrameReader(preface=False)
        self.responses = {}       # stream id -> Response
        self.goaways = []         # (last_stream_id, error_code) of each GOAWAY received
        self.ping_acks = []       # opaque data of each PING ACK received
        self.settings_received = 0
        self.frames = {}          # frame type name -> count received
        self.closed = False       # the server ended the connection
        self.h2.initiate_connection()
        self._flush()
        if wait_settings and not self._pump_until(lambda: self.settings_received > 0):
            self.pipe.close()
            raise TimeoutError("no SETTINGS from the server")

    # -- the pump ------------------------------------------------------------

    def _flush(self):
        data = self.h2.data_to_send()
        if data and not self.closed:
            try:
                self.pipe.send_raw(data)
            except OSError:
                self.closed = True

    def _pump_once(self, deadline):
        """Read and handle what arrives before `deadline`; False on timeout or end."""
        if self.closed:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.pipe.raw.settimeout(left)
        try:
            data = self.pipe.read_some()
        except socket.timeout:
            return False
        except (ConnectionError, OSError):
            data = b""
        if not data:
            self.closed = True
            return False
        for fr in self.reader.feed(data):
            self.frames[fr.name] = self.frames.get(fr.name, 0) + 1
            if fr.type == h2wire.GOAWAY:
                self.goaways.append((fr.last_stream_id(), fr.error_code()))
                continue
            for ev in self.h2.receive_data(fr.raw):
                self._on_event(ev)
        self._flush()
        return True

    def _on_event(self, ev):
        r = self.responses.get(getattr(ev, "stream_id", None))
        if isinstance(ev, h2.events.ResponseReceived) and r is not None:
            r.headers = list(ev.headers)
            r.status = int(r.header(":status"))
        elif isinstance(ev, h2.events.DataReceived):
            if r is not None:
                r.body += ev.data
            self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded) and r is not None:
            r.ended = True
        elif isinstance(ev, h2.events.StreamReset) and r is not None:
            r.reset = ev.error_code
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            self.settings_received += 1
        elif isinstance(ev, h2.events.PingAckReceived):
            self.ping_acks.append(ev.ping_data)

    def _pump_until(self, predicate, timeout=None):
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not predicate():
            if not self._pump_once(deadline):
                return predicate()
        return True

    def pump(self, seconds):
        """Handle whatever arrives within `seconds`."""
        deadline = time.monotonic() + seconds
        while self._pump_once(deadline):
            pass

    # -- requests ----------------------------------------------------------------

    def request(self, method="POST", *, path=None, body=None, headers=None, extra_headers=(),
                end_stream=True):
        """Open a stream; return its id. `headers` replaces every header
        (pseudo-headers included); otherwise :method, :scheme, :authority,
        :path (default self.path) and user-agent if set, then extra_headers."""
        sid = self.h2.get_next_available_stream_id()
        if headers is None:
            headers = [(":method", method), (":scheme", "https"),
                       (":authority", self.authority), (":path", path or self.path)]
            if self.user_agent:
                headers.append(("user-agent", self.user_agent))
        headers = list(headers) + list(extra_headers)
        self.responses[sid] = Response(sid)
        self.h2.send_headers(sid, headers, end_stream=body is None and end_stream)
        if body is not None:
            view = memoryview(body)
            while True:  # DNS messages fit the initial windows; no waiting for credit
                n = min(len(view), self.h2.max_outbound_frame_size)
                last = n == len(view)
                self.h2.send_data(sid, bytes(view[:n]), end_stream=last and end_stream)
                view = view[n:]
                if last:
                    break
        self._flush()
        return sid

    def send_query(self, query, *, method="POST", path=None, extra_headers=(),
                   content_type=DNS_MESSAGE, accept=DNS_MESSAGE):
        """Send a DNS query (Message or wire) as RFC 8484 says; return the stream id.
        content_type/accept None leaves that header out."""
        wire = query if isinstance(query, (bytes, bytearray)) else query.to_wire()
        path = path or self.path
        hdrs = [("accept", accept)] if accept else []
        if method == "GET":
            sep = "&" if "?" in path else "?"
            return self.request("GET", path=f"{path}{sep}dns={b64url(wire)}",
                                extra_headers=hdrs + list(extra_headers))
        if content_type:
            hdrs.append(("content-type", content_type))
        hdrs.append(("content-length", str(len(wire))))
        return self.request(method, path=path, body=bytes(wire),
                            extra_headers=hdrs + list(extra_headers))

    def response(self, stream_id, timeout=None):
        """Wait for stream `stream_id` to end (END_STREAM or RST_STREAM) and return
        its Response. TimeoutError if it does not in time; ConnectionError if the
        connection ends first."""
        r = self.responses[stream_id]
        if self._pump_until(lambda: r.done, timeout):
            return r
        if self.closed:
            raise ConnectionError(f"connection ended ({self.pipe.close_reason}) before "
                                  f"stream {stream_id} did")
        raise TimeoutError(f"no complete response on stream {stream_id}")

    def query(self, query, *, method="POST", timeout=None, **kw):
        """send_query() then response()."""
        return self.response(self.send_query(query, method=method, **kw), timeout)

    def ping(self, data=b"dohping!"):
        """Send a PING (8 bytes of opaque data)."""
        self.h2.ping(data)
        self._flush()

    def wait_ping_ack(self, data=b"dohping!", timeout=None):
        return self._pump_until(lambda: data in self.ping_acks, timeout)

    def reset_stream(self, stream_id, error_code=h2wire.CANCEL):
        """Send RST_STREAM. h2 refuses for a stream it considers closed."""
        self.h2.reset_stream(stream_id, error_code)
        self._flush()

    def send_raw(self, data):
        """Write bytes (e.g. a hand-made frame) as they are."""
        self.pipe.send_raw(data)

    def wait_goaway(self, timeout=None):
        """The first GOAWAY as (last_stream_id, error_code), or None if none in time."""
        self._pump_until(lambda: self.goaways, timeout)
        return self.goaways[0] if self.goaways else None

    def wait_closed(self, timeout=None):
        """Whether the server ended the connection within `timeout`; afterwards
        close_reason says how."""
        return self._pump_until(lambda: self.closed, timeout)

    @property
    def close_reason(self):
        """"close_notify", "eof" (FIN without close_notify), "reset", or None."""
        return self.pipe.close_reason

    @property
    def max_concurrent_streams(self):
        """The server's SETTINGS_MAX_CONCURRENT_STREAMS (None: not sent)."""
        v = self.h2.remote_settings.max_concurrent_streams
        return None if v > 2 ** 32 else v

    def close(self, goaway=True):
        """Send GOAWAY (unless goaway=False, or the server already ended), then
        close the socket."""
        if goaway and not self.closed:
            try:
                self.send_raw(h2wire.goaway(self.h2.highest_inbound_stream_id))
            except OSError:
                pass
        self.pipe.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def doh_query(port, name, rdtype="A", *, method="POST", ca_file=None, server_hostname=None,
              timeout=DEFAULT_TIMEOUT, query=None, **kw):
    """One query over a fresh DoH connection; returns the Response. Extra
    keywords go to make_doh_query."""
    q = query if query is not None else make_doh_query(name, rdtype, **kw)
    with DoHClient(port, ca_file=ca_file, server_hostname=server_hostname,
                   timeout=timeout) as c:
        return c.query(q, method=method)
