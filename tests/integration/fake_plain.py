"""A scriptable plain-DNS server (UDP and TCP, RFC 1035) that misbehaves on request.

The plain-DNS counterpart of fake_upstream.py, for what a real server does
not do on demand: truncate every UDP answer, send forged answers before the
right one, answer from another address, or never answer. It runs in the test
process on one background thread (a selector loop over the UDP socket, the
TCP listener and its connections), so a test can change its behaviour between
two queries and read what it received.

Behaviours (keyword arguments of the constructor and of set(); all default to
a well-behaved server):

  responder         callable(query Message) -> Message | bytes | None (None: no
                    answer). Default: fake_upstream.default_responder (A
                    192.0.2.1, AAAA 2001:db8::1, "big*" 100 A records, "nx*"
                    NXDOMAIN).
  delay             seconds before the right UDP answer (forgeries go at once).
  stall             record queries, answer none (UDP and TCP).
  tcp_stall         record queries over TCP, answer none there (UDP as usual).
  truncate          every UDP answer is TC=1 with the question only; TCP gets
                    the whole answer.
  wrong_id          before the right UDP answer, one with ID xor 0x5a5a
                    claiming qname A 6.6.6.6.
  wrong_question    before the right UDP answer, one with the right ID for
                    "evil.<qname>" claiming qname A 6.6.6.6.
  from_elsewhere    before the right UDP answer, one with the right ID and
                    question claiming qname A 6.6.6.6, sent from another port
                    of the same address (the connected socket must drop it).

tcp=False (constructor only) listens on UDP alone: a TCP connect is refused.
"""

import dataclasses
import heapq
import ipaddress
import logging
import selectors
import socket
import threading
import time

import dns.flags
import dns.message
import dns.name
import dns.rrset

from fake_upstream import POISON_A, TTL, default_responder

log = logging.getLogger("fake_plain")

DEFAULT_BEHAVIOUR = {
    "responder": None,
    "delay": 0,
    "stall": False,
    "tcp_stall": False,
    "truncate": False,
    "wrong_id": False,
    "wrong_question": False,
    "from_elsewhere": False,
}


@dataclasses.dataclass(frozen=True)
class Received:
    """One query as the server read it."""
    transport: str      # "udp" or "tcp"
    peer: tuple         # (host, port) it came from
    id: int
    name: str           # lower case, absolute ("www.corp.test.")
    rdtype: int
    wire: bytes


def poisoned(query, claimed_name):
    """An answer to `query` (its ID and question) claiming claimed_name A 6.6.6.6."""
    resp = dns.message.make_response(query, recursion_available=True)
    resp.answer.append(dns.rrset.from_text(claimed_name, TTL, "IN", "A", POISON_A))
    return resp.to_wire()


class FakePlain:
    """A plain-DNS server on host:port (UDP, and TCP unless tcp=False)."""

    def __init__(self, *, host="127.0.0.1", port=0, tcp=True, **behaviour):
        self.host, self.port, self.tcp = host, port, tcp
        self._family = (socket.AF_INET6 if ipaddress.ip_address(host).version == 6
                        else socket.AF_INET)
        self._lock = threading.Lock()
        self._behaviour = dict(DEFAULT_BEHAVIOUR)
        self.set(**behaviour)
        self._received = []
        self.errors = []  # failures of the fake itself; the fixture fails the test on any
        self._thread = None

    # -- lifecycle ------------------------------------------------------------

    def _bind(self):
        """The UDP socket and (with tcp) the TCP listener on one port number."""
        udp = socket.socket(self._family, socket.SOCK_DGRAM)
        try:
            udp.bind((self.host, self.port))
            if not self.tcp:
                return udp, None
            lst = socket.socket(self._family, socket.SOCK_STREAM)
            try:
                lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                lst.bind((self.host, udp.getsockname()[1]))
                lst.listen(64)
            except OSError:
                lst.close()
                raise
            return udp, lst
        except OSError:
            udp.close()
            raise

    def start(self):
        for attempt in range(50):
            try:
                self._udp, self._listener = self._bind()
                break
            except OSError:
                if self.port or attempt == 49:  # a fixed port, or no luck at all
                    raise
        self.port = self._udp.getsockname()[1]
        udp = self._udp
        self._forger = socket.socket(self._family, socket.SOCK_DGRAM)
        self._forger.bind((self.host, 0))
        self._wake_r, self._wake_w = socket.socketpair()
        self._sel = selectors.DefaultSelector()
        self._sel.register(udp, selectors.EVENT_READ, self._on_udp)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        if self._listener:
            self._sel.register(self._listener, selectors.EVENT_READ, self._on_accept)
        self._timers = []  # heap of (due, seq, fn)
        self._seq = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"fake-plain-{self.port}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._thread is None:
            return
        self._stopping = True
        self._wake_w.send(b"x")
        self._thread.join(5)
        if self._thread.is_alive():
            self.errors.append("the server thread did not stop within 5 s")
        for key in list(self._sel.get_map().values()):
            key.fileobj.close()
        self._sel.close()
        self._forger.close()
        self._wake_w.close()
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- behaviour and records --------------------------------------------------

    def set(self, **behaviour):
        for k in behaviour:
            if k not in DEFAULT_BEHAVIOUR:
                raise TypeError(f"unknown FakePlain behaviour {k!r}")
        with self._lock:
            self._behaviour.update(behaviour)

    def _snapshot(self):
        with self._lock:
            return dict(self._behaviour)

    @property
    def received(self):
        """Every query read so far (Received), in order."""
        with self._lock:
            return list(self._received)

    def names(self):
        return {r.name for r in self.received}

    def wait_queries(self, n, timeout=2.0):
        deadline = time.monotonic() + timeout
        while len(self.received) < n:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    # -- the loop -----------------------------------------------------------------

    def _run(self):
        try:
            while not self._stopping:
                timeout = None
                if self._timers:
                    timeout = max(0.0, self._timers[0][0] - time.monotonic())
                for key, _ in self._sel.select(timeout):
                    if key.data is not None:
                        key.data(key.fileobj)
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    heapq.heappop(self._timers)[2]()
        except Exception as e:  # a bug in this file must fail the test
            log.exception("fake plain server failed")
            self.errors.append(repr(e))

    def _later(self, delay, fn):
        if not delay:
            fn()
            return
        self._seq += 1
        heapq.heappush(self._timers, (time.monotonic() + delay, self._seq, fn))

    def _record(self, transport, peer, wire):
        try:
            msg = dns.message.from_wire(wire)
        except Exception as e:
            self.errors.append(f"unparseable query over {transport} from {peer}: {e!r}")
            return None
        q = msg.question[0]
        with self._lock:
            self._received.append(Received(transport, peer[:2], msg.id,
                                           q.name.to_text().lower(), q.rdtype, wire))
        return msg

    def _answer(self, query, b):
        resp = (b["responder"] or default_responder)(query)
        if resp is None or isinstance(resp, (bytes, bytearray)):
            return resp
        return resp.to_wire(max_size=65535)

    # -- UDP ---------------------------------------------------------------------------

    def _on_udp(self, sock):
        try:
            wire, peer = sock.recvfrom(65535)
        except BlockingIOError:
            return
        query = self._record("udp", peer, wire)
        b = self._snapshot()
        if query is None or b["stall"]:
            return
        name = query.question[0].name
        if b["wrong_id"]:
            forged = bytearray(poisoned(query, name))
            forged[0:2] = (query.id ^ 0x5A5A).to_bytes(2, "big")
            sock.sendto(bytes(forged), peer)
        if b["wrong_question"]:
            evil = dns.message.make_query(dns.name.Name((b"evil",) + name.labels),
                                          query.question[0].rdtype, id=query.id)
            sock.sendto(poisoned(evil, name), peer)
        if b["from_elsewhere"]:
            self._forger.sendto(poisoned(query, name), peer)
        if b["truncate"]:
            resp = dns.message.make_response(query, recursion_available=True)
            resp.flags |= dns.flags.TC
            wire_out = resp.to_wire()
        else:
            wire_out = self._answer(query, b)
        if wire_out is not None:
            self._later(b["delay"], lambda: sock.sendto(wire_out, peer))

    # -- TCP ---------------------------------------------------------------------------

    def _on_accept(self, lst):
        conn, peer = lst.accept()
        conn.setblocking(False)
        state = {"peer": peer, "buf": b""}
        self._sel.register(conn, selectors.EVENT_READ,
                           lambda s: self._on_tcp(s, state))

    def _close_tcp(self, conn):
        self._sel.unregister(conn)
        conn.close()

    def _on_tcp(self, conn, state):
        try:
            data = conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close_tcp(conn)
            return
        state["buf"] += data
        while len(state["buf"]) >= 2:
            n = int.from_bytes(state["buf"][:2], "big")
            if len(state["buf"]) < 2 + n:
                break
            wire, state["buf"] = state["buf"][2:2 + n], state["buf"][2 + n:]
            query = self._record("tcp", state["peer"], wire)
            b = self._snapshot()
            if query is None or b["stall"] or b["tcp_stall"]:
                continue
            out = self._answer(query, b)
            if out is not None:
                conn.setblocking(True)  # small answers on loopback: never blocks long
                try:
                    conn.sendall(len(out).to_bytes(2, "big") + out)
                except OSError:
                    pass
                conn.setblocking(False)
