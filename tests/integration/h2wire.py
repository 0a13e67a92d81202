"""HTTP/2 frames on the wire, one level below python3-h2.

fake_doh.py and doh_client.py cut the decrypted byte stream into whole
frames themselves before handing each one to h2.H2Connection. That gives
them what h2 does not: a count of every frame received (PINGs and
RST_STREAMs included) even while a connection plays dead, the choice to
withhold a frame from h2 (a PING nobody acknowledges), and a GOAWAY that
h2 never sees — h2 4.x refuses every frame after a GOAWAY, sent or
received, whereas RFC 9113 §6.8 says the streams up to last_stream_id
still complete.
"""

import dataclasses

from hyperframe.frame import GoAwayFrame, SettingsFrame

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADER_LEN = 9
DEFAULT_MAX_FRAME_SIZE = 16384  # RFC 9113 §6.5.2: what a peer accepts unless told otherwise

# RFC 9113 §6 frame types
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, \
    WINDOW_UPDATE, CONTINUATION = range(10)
TYPE_NAMES = {DATA: "DATA", HEADERS: "HEADERS", PRIORITY: "PRIORITY",
              RST_STREAM: "RST_STREAM", SETTINGS: "SETTINGS", PUSH_PROMISE: "PUSH_PROMISE",
              PING: "PING", GOAWAY: "GOAWAY", WINDOW_UPDATE: "WINDOW_UPDATE",
              CONTINUATION: "CONTINUATION"}
FLAG_ACK = 0x1         # SETTINGS and PING
FLAG_END_STREAM = 0x1  # DATA and HEADERS
FLAG_END_HEADERS = 0x4  # HEADERS and CONTINUATION

# RFC 9113 §7 error codes, the ones the tests name
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
STREAM_CLOSED = 0x5
REFUSED_STREAM = 0x7
CANCEL = 0x8


@dataclasses.dataclass(frozen=True)
class Frame:
    """One frame as received. `type` is None for the client connection
    preface (24 bytes, not a frame) and for an oversized frame's bytes."""
    type: int
    flags: int
    stream_id: int
    payload: bytes
    raw: bytes  # exactly the bytes to hand to h2

    @property
    def name(self):
        if self.type is None:
            return "PREFACE" if self.raw == PREFACE else "JUNK"
        return TYPE_NAMES.get(self.type, f"UNKNOWN_{self.type}")

    @property
    def ack(self):
        return self.type in (SETTINGS, PING) and bool(self.flags & FLAG_ACK)

    def error_code(self):
        """RST_STREAM's or GOAWAY's error code."""
        if self.type == RST_STREAM:
            return int.from_bytes(self.payload[:4], "big")
        if self.type == GOAWAY:
            return int.from_bytes(self.payload[4:8], "big")
        raise ValueError(f"{self.name} carries no error code")

    def last_stream_id(self):
        """GOAWAY's last stream id."""
        return int.from_bytes(self.payload[:4], "big") & 0x7FFFFFFF


class FrameReader:
    """Cuts a byte stream into whole frames.

    preface=True for a server's reader: the stream begins with the client
    preface, returned as a Frame of type None. A frame longer than
    max_frame_size is not waited for: its bytes so far come back as one
    Frame of type None, for h2 to reject as FRAME_SIZE_ERROR.
    """

    def __init__(self, *, preface, max_frame_size=DEFAULT_MAX_FRAME_SIZE):
        self.buf = bytearray()
        self.want_preface = preface
        self.max_frame_size = max_frame_size
        self.broken = False  # after an oversized frame: pass everything through

    def feed(self, data):
        """Add bytes; return the list of Frames now complete."""
        self.buf += data
        out = []
        if self.broken:
            if self.buf:
                out.append(Frame(None, 0, 0, b"", bytes(self.buf)))
                self.buf.clear()
            return out
        if self.want_preface:
            if len(self.buf) < len(PREFACE):
                return out
            out.append(Frame(None, 0, 0, b"", bytes(self.buf[:len(PREFACE)])))
            del self.buf[:len(PREFACE)]
            self.want_preface = False
        while len(self.buf) >= HEADER_LEN:
            length = int.from_bytes(self.buf[:3], "big")
            if length > self.max_frame_size:
                self.broken = True
                out.append(Frame(None, 0, 0, b"", bytes(self.buf)))
                self.buf.clear()
                break
            if len(self.buf) < HEADER_LEN + length:
                break
            raw = bytes(self.buf[:HEADER_LEN + length])
            del self.buf[:HEADER_LEN + length]
            out.append(Frame(raw[3], raw[4], int.from_bytes(raw[5:9], "big") & 0x7FFFFFFF,
                             raw[HEADER_LEN:], raw))
        return out


def goaway(last_stream_id, error_code=NO_ERROR, debug=b""):
    """A serialized GOAWAY frame."""
    return GoAwayFrame(0, last_stream_id=last_stream_id, error_code=error_code,
                       additional_data=debug).serialize()


def settings(values):
    """A serialized SETTINGS frame carrying {code: value}."""
    f = SettingsFrame(0)
    f.settings = dict(values)
    return f.serialize()
