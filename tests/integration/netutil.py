"""Small loopback networking helpers shared by the integration fixtures and tests.

Everything here talks to 127.0.0.1 / ::1 only and every call is bounded by a
timeout, so a broken daemon makes a test fail instead of hang.
"""

import socket
import ssl
import time

import dns.edns
import dns.message
import dns.query
import dns.rdatatype

# Short by default: on loopback an answer takes microseconds, so anything
# slower than this is a bug (or a deliberately stalled upstream).
DEFAULT_TIMEOUT = 2.0


def _family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_port(host="127.0.0.1", *, tcp=True, udp=True, attempts=50):
    """Return a port number that is currently free on `host` for TCP and/or UDP.

    dotproxy listens on the same number for UDP and TCP, so we ask the kernel
    for an ephemeral TCP port and then check that the same number is also free
    for UDP, retrying otherwise. The sockets are closed before returning, so
    there is a small race with other processes; on a test machine that is
    acceptable and far better than fixed port numbers.
    """
    fam = _family(host)
    for _ in range(attempts):
        first = socket.socket(fam, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
        try:
            first.bind((host, 0))
            port = first.getsockname()[1]
            if tcp and udp:
                second = socket.socket(fam, socket.SOCK_DGRAM)
                try:
                    second.bind((host, port))
                except OSError:
                    continue
                finally:
                    second.close()
            return port
        finally:
            first.close()
    raise RuntimeError(f"no port free for both TCP and UDP on {host} after {attempts} tries")


def wait_tcp(host, port, timeout=5.0, *, alive=None):
    """Poll until a TCP connection to host:port succeeds; return True, or False on timeout.

    `alive`, if given, is called between attempts; when it returns False the
    wait ends early (e.g. the server process already exited, no point waiting).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            pass
        if alive is not None and not alive():
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def wait_udp_dns(host, port, timeout=5.0, *, qname=".", rdtype="NS", alive=None):
    """Poll with a UDP DNS query until *any* well-formed DNS reply arrives.

    Any rcode counts: the point is only that something is answering on the
    port. Returns True, or False on timeout (or when `alive()` says the server
    is gone).
    """
    deadline = time.monotonic() + timeout
    q = dns.message.make_query(qname, rdtype)
    while True:
        try:
            dns.query.udp(q, host, port=port, timeout=0.3, ignore_unexpected=True)
            return True
        except (OSError, dns.exception.DNSException):
            pass
        if alive is not None and not alive():
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def client_tls_context(ca_file=None, *, verify=True):
    """A TLS client context for talking to our test servers.

    With verify=True it trusts only `ca_file` (never the system store, so a
    test can't pass by accident against some real certificate) and checks the
    host name. verify=False is for readiness probes that only care that a
    server speaks TLS at all.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Python sets this by default with OpenSSL 3; it makes a bare TCP FIN look
    # exactly like a close_notify, and telling those apart is part of testing.
    ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=ca_file)
    return ctx


def make_query(name, rdtype="A", **kw):
    """Build a dnspython query. Keywords go to dns.message.make_query (id, flags,
    use_edns, payload, want_dnssec, options, pad...); without them the query
    carries no EDNS, like a plain stub resolver's."""
    return dns.message.make_query(name, rdtype, **kw)


def udp_query(port, name, rdtype="A", *, host="127.0.0.1", timeout=DEFAULT_TIMEOUT,
              query=None, **kw):
    """Send one query over UDP and return the reply (dns.message.Message).

    Truncated replies are returned as they are (TC set) rather than raised,
    because checking truncation is itself something the tests do.
    Extra keywords go to make_query (use_edns, payload, id, want_dnssec...).
    """
    q = query if query is not None else make_query(name, rdtype, **kw)
    return dns.query.udp(q, host, port=port, timeout=timeout)


def tcp_query(port, name, rdtype="A", *, host="127.0.0.1", timeout=DEFAULT_TIMEOUT,
              query=None, **kw):
    """Send one query over plain DNS-over-TCP and return the reply."""
    q = query if query is not None else make_query(name, rdtype, **kw)
    return dns.query.tcp(q, host, port=port, timeout=timeout)


def dot_query(port, name, rdtype="A", *, host="127.0.0.1", ca_file=None,
              server_hostname=None, verify=True, timeout=DEFAULT_TIMEOUT, query=None, **kw):
    """Send one query over DNS-over-TLS (RFC 7858) and return the reply.

    With verify=True the server must present a certificate from `ca_file`
    valid for `server_hostname` (an IP literal checks the IP SAN).
    """
    q = query if query is not None else make_query(name, rdtype, **kw)
    ctx = client_tls_context(ca_file, verify=verify)
    if verify and server_hostname is None:
        server_hostname = host
    return dns.query.tls(q, host, port=port, timeout=timeout, ssl_context=ctx,
                         server_hostname=server_hostname)


class DoTClient:
    """A raw DoT connection for tests that need control over framing.

    dns.query.tls does one query per connection and insists that the answer
    matches; tests of pipelining, reordering and malformed answers need to
    send several frames and read whatever comes back, byte for byte.

    TLS runs on memory BIOs over a plain socket, not as an ssl.SSLSocket:
    when a server sends answers and then a TCP RST, SSLSocket can lose the
    answers that were already received (OpenSSL sees the reset first), while
    here every byte that arrived is decrypted before the reset is reported.
    How the peer ended the connection is kept in `close_reason`:
    "close_notify", "eof" (TCP FIN without close_notify) or "reset".
    """

    def __init__(self, port, *, host="127.0.0.1", ca_file=None, server_hostname=None,
                 verify=True, timeout=DEFAULT_TIMEOUT, session=None, context=None,
                 source=None):
        """source: the local address to connect from (another 127.x address
        is another client, as far as per-address limits go)."""
        self.ctx = context or client_tls_context(ca_file, verify=verify)
        self.raw = socket.create_connection((host, port), timeout=timeout,
                                            source_address=(source, 0) if source else None)
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.app = bytearray()      # decrypted bytes not yet consumed
        self.close_reason = None
        try:
            self.tls = self.ctx.wrap_bio(
                self._in, self._out, session=session,
                server_hostname=server_hostname or (host if verify else None))
            self._handshake()
        except BaseException:
            self.raw.close()
            raise

    # -- byte pumps ---------------------------------------------------------

    def _flush(self):
        data = self._out.read()
        if data:
            self.raw.sendall(data)

    def _pull(self):
        """Feed the next chunk from the socket into TLS; False once the socket ended."""
        if self.close_reason is not None:
            return False
        try:
            data = self.raw.recv(65536)
        except ConnectionResetError:
            self.close_reason = "reset"
            self._in.write_eof()
            return False
        if not data:
            self.close_reason = "eof"
            self._in.write_eof()
            return False
        self._in.write(data)
        return True

    def _handshake(self):
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                if not self._pull():
                    raise ConnectionError(f"connection ended ({self.close_reason}) "
                                          "during the TLS handshake") from None
            except ssl.SSLError:
                self._flush()  # our alert tells the server why
                raise
        self._flush()

    def _more(self):
        """Decrypt more application data into self.app; False at end of stream."""
        ended = False
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                if self._pull():
                    continue
                if ended:  # EOF is in the BIO and OpenSSL still wants more
                    return False
                ended = True  # the next read should report the EOF
                continue
            except ssl.SSLZeroReturnError:
                self.close_reason = "close_notify"
                return False
            except ssl.SSLError:
                if self.close_reason is None:
                    raise  # a real TLS error, not just the end of the stream
                # "unexpected eof": TCP ended without close_notify; close_reason
                # ("eof" or "reset") says how.
                return False
            if not chunk:
                # SSLObject.read() reports a received close_notify as b"".
                self.close_reason = "close_notify"
                return False
            self.app += chunk
            return True

    # -- public ---------------------------------------------------------------

    def send(self, *queries):
        """Send messages (Message or wire bytes) in one write, as pipelined frames."""
        buf = b""
        for q in queries:
            wire = q if isinstance(q, (bytes, bytearray)) else q.to_wire()
            buf += len(wire).to_bytes(2, "big") + wire
        self.send_raw(buf)

    def send_raw(self, data):
        """Send arbitrary application bytes (e.g. a broken frame)."""
        self.tls.write(data)
        self._flush()

    def recv_exact(self, n):
        """Read exactly n bytes of application data.

        Raises EOFError if the stream ends cleanly or with a bare FIN first,
        ConnectionResetError if it ended with a RST, socket.timeout on timeout.
        """
        while len(self.app) < n:
            if not self._more():
                got = len(self.app)
                if self.close_reason == "reset":
                    raise ConnectionResetError(f"connection reset after {got} of {n} bytes")
                raise EOFError(f"connection closed ({self.close_reason}) after {got} of {n} bytes")
        out = bytes(self.app[:n])
        del self.app[:n]
        return out

    def recv_frame(self):
        """Read one length-prefixed frame and return its raw bytes."""
        n = int.from_bytes(self.recv_exact(2), "big")
        return self.recv_exact(n)

    def recv(self):
        """Read one frame and parse it as a DNS message."""
        return dns.message.from_wire(self.recv_frame())

    def read_some(self):
        """The application data available next (waiting up to the socket's
        timeout, then socket.timeout); b"" once the stream ended (see
        close_reason). For protocols without DNS framing (doh_client.py)."""
        if not self.app and not self._more():
            return b""
        out = bytes(self.app)
        self.app.clear()
        return out

    def read_for(self, seconds):
        """Collect whatever application data arrives within `seconds`; never raises
        for timeout or end of stream (check close_reason)."""
        deadline = time.monotonic() + seconds
        old = self.raw.gettimeout()
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.raw.settimeout(left)
                try:
                    if not self._more():
                        break
                except (socket.timeout, ConnectionError):
                    break
        finally:
            self.raw.settimeout(old)
        out = bytes(self.app)
        self.app.clear()
        return out

    def peer_certificate(self):
        """The server's certificate, DER."""
        return self.tls.getpeercert(binary_form=True)

    @property
    def session(self):
        return self.tls.session

    @property
    def session_reused(self):
        return self.tls.session_reused

    def close(self):
        try:
            self.raw.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- plain DNS over TCP by hand, and reply inspection ---------------------------------------

def frame(msg):
    """A message (dnspython or bytes) with its RFC 1035 §4.2.2 length prefix."""
    wire = msg if isinstance(msg, (bytes, bytearray)) else msg.to_wire()
    return len(wire).to_bytes(2, "big") + wire


def recv_exact(sock, n):
    """Exactly n bytes from a stream socket, or ConnectionError if it closes first."""
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed by the proxy")
        buf += chunk
    return buf


def read_frame(sock, timeout=3.0):
    """One length-prefixed DNS message from a plain TCP socket, parsed."""
    sock.settimeout(timeout)
    n = int.from_bytes(recv_exact(sock, 2), "big")
    return dns.message.from_wire(recv_exact(sock, n))


def ede_codes(reply):
    """The Extended DNS Error info codes (RFC 8914) in a reply."""
    return [o.code for o in reply.options if o.otype == dns.edns.EDE]
