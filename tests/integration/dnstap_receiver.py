"""A dnstap receiver for tests: Frame Streams on a unix socket, and a strict decoder.

FstrmReceiver listens on a unix socket and speaks the bidirectional Frame
Streams protocol as fstrm_capture does (READY -> ACCEPT -> START, data
frames, STOP -> FINISH), on a background thread, accepting only the content
type "protobuf:dnstap.Dnstap".  Every data frame is decoded at once with
decode_dnstap(); tests read `messages` while it runs, can stop reading
(pause(), the socket buffers then fill up: a slow receiver), and can stop
and start it again on the same path (a receiver that goes away and comes
back).  Anything unexpected -- a bad handshake, a frame that does not
decode -- goes to `errors`, which the tests check is empty.

decode_dnstap() is written from the published schema (dnstap.proto of
github.com/dnstap/dnstap.pb), not generated from ours: it knows the field
number and wire type of every field of Dnstap and Message and rejects any
other field, a field with another wire type, a repeated one, or a missing
required one, so that a wrong number in lib/dnstap.proto cannot pass.
"""

import os
import socket
import struct
import threading
import time

CONTENT_TYPE = b"protobuf:dnstap.Dnstap"

# Frame Streams control frames (fstrm's control.h).
ACCEPT, START, STOP, READY, FINISH = 1, 2, 3, 4, 5
FIELD_CONTENT_TYPE = 1

# Message.type, SocketFamily, SocketProtocol, by the schema's numbers.
MESSAGE_TYPES = {5: "CLIENT_QUERY", 6: "CLIENT_RESPONSE", 7: "FORWARDER_QUERY",
                 8: "FORWARDER_RESPONSE"}
FAMILIES = {1: "INET", 2: "INET6"}
PROTOCOLS = {1: "UDP", 2: "TCP", 3: "DOT", 4: "DOH", 5: "DNSCryptUDP", 6: "DNSCryptTCP",
             7: "DOQ"}
HTTP_PROTOCOLS = {1: "HTTP1", 2: "HTTP2", 3: "HTTP3"}

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5

# name, wire type, for each field number.
DNSTAP_FIELDS = {1: ("identity", LEN), 2: ("version", LEN), 3: ("extra", LEN),
                 14: ("message", LEN), 15: ("type", VARINT)}
MESSAGE_FIELDS = {
    1: ("type", VARINT), 2: ("socket_family", VARINT), 3: ("socket_protocol", VARINT),
    4: ("query_address", LEN), 5: ("response_address", LEN), 6: ("query_port", VARINT),
    7: ("response_port", VARINT), 8: ("query_time_sec", VARINT),
    9: ("query_time_nsec", FIXED32), 10: ("query_message", LEN), 11: ("query_zone", LEN),
    12: ("response_time_sec", VARINT), 13: ("response_time_nsec", FIXED32),
    14: ("response_message", LEN), 15: ("policy", LEN), 16: ("http_protocol", VARINT),
}


class DecodeError(ValueError):
    pass


def _varint(data, pos):
    value = shift = 0
    while True:
        if pos >= len(data):
            raise DecodeError("truncated varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift >= 64:
            raise DecodeError("varint too long")


def _fields(data, schema, what):
    out = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number not in schema:
            raise DecodeError(f"{what}: unknown field {number}")
        name, want = schema[number]
        if wire != want:
            raise DecodeError(f"{what}.{name}: wire type {wire}, expected {want}")
        if name in out:
            raise DecodeError(f"{what}.{name}: repeated")
        if wire == VARINT:
            out[name], pos = _varint(data, pos)
        elif wire == FIXED32:
            if pos + 4 > len(data):
                raise DecodeError(f"{what}.{name}: truncated")
            out[name] = struct.unpack_from("<I", data, pos)[0]
            pos += 4
        else:
            n, pos = _varint(data, pos)
            if pos + n > len(data):
                raise DecodeError(f"{what}.{name}: truncated")
            out[name] = bytes(data[pos:pos + n])
            pos += n
    return out


def decode_dnstap(payload):
    """One Dnstap payload -> dict: identity, version, and the Message's fields
    by their schema names (enums as names: "CLIENT_QUERY", "UDP", "INET")."""
    top = _fields(payload, DNSTAP_FIELDS, "Dnstap")
    if top.get("type") != 1 or "message" not in top:
        raise DecodeError(f"Dnstap: type {top.get('type')} and a message expected")
    m = _fields(top["message"], MESSAGE_FIELDS, "Message")
    if "type" not in m:
        raise DecodeError("Message: no type")
    for name, names in (("type", MESSAGE_TYPES), ("socket_family", FAMILIES),
                        ("socket_protocol", PROTOCOLS), ("http_protocol", HTTP_PROTOCOLS)):
        if name in m:
            if m[name] not in names:
                raise DecodeError(f"Message.{name}: unexpected value {m[name]}")
            m[name] = names[m[name]]
    for name in ("query_address", "response_address"):
        if name in m:
            want = {"INET": 4, "INET6": 16}.get(m.get("socket_family"))
            if len(m[name]) != want:
                raise DecodeError(f"Message.{name}: {len(m[name])} bytes for "
                                  f"{m.get('socket_family')}")
            m[name] = socket.inet_ntop(socket.AF_INET if want == 4 else socket.AF_INET6,
                                       m[name])
    for t in ("query", "response"):
        if f"{t}_time_sec" in m:
            m[f"{t}_time"] = m[f"{t}_time_sec"] + m.get(f"{t}_time_nsec", 0) / 1e9
    m["identity"] = top.get("identity")
    m["version"] = top.get("version")
    return m


# -- Frame Streams ------------------------------------------------------------------------

def control_frame(ctype, content_types=()):
    body = struct.pack(">I", ctype)
    for ct in content_types:
        body += struct.pack(">II", FIELD_CONTENT_TYPE, len(ct)) + ct
    return struct.pack(">II", 0, len(body)) + body


def parse_control(body):
    (ctype,) = struct.unpack_from(">I", body, 0)
    pos, types = 4, []
    while pos < len(body):
        ftype, flen = struct.unpack_from(">II", body, pos)
        pos += 8
        if ftype == FIELD_CONTENT_TYPE:
            types.append(body[pos:pos + flen])
        pos += flen
    return ctype, types


class _Closed(Exception):
    pass


class FstrmReceiver:
    """A bidirectional Frame Streams receiver on `path` (see the module docstring)."""

    def __init__(self, path, *, content_type=CONTENT_TYPE):
        self.path = str(path)
        self.content_type = content_type
        self._lock = threading.Lock()
        self._messages = []
        self.errors = []
        self.handshakes = 0
        self.finished = 0  # streams that ended with STOP, answered by FINISH
        self._reading = threading.Event()
        self._reading.set()
        self._listener = None
        self._threads = []
        self._conns = []
        self._stopping = False

    @property
    def messages(self):
        with self._lock:
            return list(self._messages)

    def start(self):
        self._stopping = False
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(self.path)
        s.listen(8)
        self._listener = s
        t = threading.Thread(target=self._accept_loop, name="fstrm-receiver", daemon=True)
        t.start()
        self._threads = [t]
        return self

    def stop(self):
        """Go away: close the listener and every connection, remove the socket file."""
        self._stopping = True
        self._reading.set()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        for t in self._threads:
            t.join(5)
        self._threads = []
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def pause(self):
        """Stop reading: what dotproxy writes piles up in the socket buffers."""
        self._reading.clear()

    def resume(self):
        self._reading.set()

    def wait_for(self, predicate, timeout=10.0):
        """Wait until predicate(messages) is true; returns the messages (or None)."""
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.messages
            if predicate(msgs):
                return msgs
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    # -- on the receiver's threads -------------------------------------------------------

    def _accept_loop(self):
        while not self._stopping:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), name="fstrm-conn",
                                 daemon=True)
            t.start()
            self._threads.append(t)

    def _recv_exact(self, conn, n):
        buf = b""
        while len(buf) < n:
            self._reading.wait()
            try:
                chunk = conn.recv(min(n - len(buf), 65536))
            except OSError:
                raise _Closed() from None
            if not chunk:
                raise _Closed()
            buf += chunk
        return buf

    def _read_control(self, conn, expect):
        escape, length = struct.unpack(">II", self._recv_exact(conn, 8))
        if escape != 0:
            raise ValueError(f"expected a control frame, got a data frame of {escape} bytes")
        ctype, types = parse_control(self._recv_exact(conn, length))
        if ctype != expect:
            raise ValueError(f"control frame {ctype}, expected {expect}")
        return types

    def _serve(self, conn):
        try:
            types = self._read_control(conn, READY)
            if self.content_type not in types:
                raise ValueError(f"READY offers {types}, not {self.content_type!r}")
            conn.sendall(control_frame(ACCEPT, [self.content_type]))
            types = self._read_control(conn, START)
            if types != [self.content_type]:
                raise ValueError(f"START names {types}")
            with self._lock:
                self.handshakes += 1
            while True:
                (length,) = struct.unpack(">I", self._recv_exact(conn, 4))
                if length == 0:
                    (clen,) = struct.unpack(">I", self._recv_exact(conn, 4))
                    ctype, _ = parse_control(self._recv_exact(conn, clen))
                    if ctype != STOP:
                        raise ValueError(f"control frame {ctype} in the stream")
                    conn.sendall(control_frame(FINISH))
                    with self._lock:
                        self.finished += 1
                    return
                payload = self._recv_exact(conn, length)
                msg = decode_dnstap(payload)
                with self._lock:
                    self._messages.append(msg)
        except _Closed:
            pass
        except Exception as e:  # noqa: BLE001 -- reported to the test
            if not self._stopping:
                with self._lock:
                    self.errors.append(repr(e))
        finally:
            conn.close()
