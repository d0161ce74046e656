# Copyright (c) dockyard.images contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A small gRPC client over a Unix socket, in Python's standard library: how the containerd store asks
containerd what it holds, without a `ctr` process per question and without grpcio on the host.

- gRPC is HTTP/2 (RFC 9113) with each message framed by a flag byte and its length. One connection,
  one call at a time (a lock), each call on a stream of its own: the request's headers as HPACK
  literals that are never indexed, one message, then the answer's headers, messages and trailers
  (`grpc-status`, `grpc-message`). The client takes the largest flow-control window there is, so a
  server never waits for it; it answers the server's SETTINGS and PINGs.
- Answers are decoded with HPACK (RFC 7541): the static table, the dynamic table the server fills,
  and the canonical Huffman code, rebuilt from its code lengths.
- Messages are protobuf, read field by field into numbers and bytes; the caller knows what each
  field number means. Nothing is compressed.
- Everything read is bounded (a frame by the size this client allows, a header block to 64 KiB, an
  answer by `limit`), a call on which the server makes no progress for `timeout` seconds fails (PINGs
  and other streams' frames do not count), and every malformed byte raises GrpcError, never another
  exception. A failure closes the connection and the next call opens a new one; a unary call that finds
  its idle connection closed by the server (a restart, a GOAWAY) is made once more on a new one.

This module_utils file is private to the dockyard.images collection and may change at any time.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Iterable, Optional
from urllib.parse import unquote_to_bytes

OK, DEADLINE_EXCEEDED, NOT_FOUND, ALREADY_EXISTS, RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE = 0, 4, 5, 6, 8, 13, 14
MAX_ANSWER = 64 * 1024 * 1024  # bytes of messages one call may answer, unless the caller allows more

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _PUSH_PROMISE, _PING, _GOAWAY, _WINDOW_UPDATE, _CONTINUATION = 0, 1, 3, 4, 5, 6, 7, 8, 9
_END_STREAM = _ACK = 0x1
_END_HEADERS, _PADDED, _PRIORITY = 0x4, 0x8, 0x20
_MAX_FRAME = 16384  # the largest frame this client allows (HTTP/2's default, which it does not raise)
_WINDOW = 2**31 - 1  # the largest flow-control window HTTP/2 allows
_TABLE_SIZE = 4096  # the HPACK dynamic table size this client allows (the default)
_MAX_HEADER_BLOCK = 64 * 1024  # the largest header block this client reads
_SETTING_WINDOW, _SETTING_MAX_FRAME = 4, 5

# RFC 7541 Appendix A
_STATIC = (
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
    (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
    (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
    ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""), ("cache-control", ""),
    ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""), ("content-length", ""),
    ("content-location", ""), ("content-range", ""), ("content-type", ""), ("cookie", ""), ("date", ""),
    ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""), ("if-match", ""),
    ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""), ("if-unmodified-since", ""),
    ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""), ("proxy-authenticate", ""),
    ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""), ("retry-after", ""),
    ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""), ("transfer-encoding", ""),
    ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
)  # fmt: skip

# RFC 7541 Appendix B: the length of each symbol's code (0 to 255, then EOS), one base-32 digit each. The
# code is canonical: codes of one length are consecutive, in the order of their symbols.
_HUFFMAN_LENGTHS = (
    "dnsssssssoussussssssssusssssssss6aacd68baa8b8666555666666678f6cad67777777777777777777777878djde6f56565666577666567655677777"
    "fbedskmkkmmmnmnnnnnonoomnonnnnlmnmnnomlkmmnnlnmmolmnnllmlnmnnkmmmnmmnqqkjmnmpqqqrrqopjlqrrqrollqqsrrrkoklmllnmmppooqnqrqqrrrrrsrrrrrqu"
)
_EOS = 256


def _huffman_codes() -> dict:
    """(length, code): symbol, for every symbol of HPACK's Huffman code."""
    lengths = [int(digit, 32) for digit in _HUFFMAN_LENGTHS]
    codes, code, previous = {}, -1, 0
    for symbol in sorted(range(len(lengths)), key=lambda s: (lengths[s], s)):
        code = (code + 1) << (lengths[symbol] - previous)
        previous = lengths[symbol]
        codes[(previous, code)] = symbol
    return codes


_HUFFMAN = _huffman_codes()


class GrpcError(Exception):
    """A call that failed: its gRPC status code and the server's message (or what went wrong on the way)."""

    def __init__(self, status: int, message: str, from_server: bool = False):
        super().__init__(message)
        self.status = status
        self.message = message
        self.from_server = from_server  # the server's own grpc-status: the connection is still sound


def _malformed(what: str) -> GrpcError:
    return GrpcError(INTERNAL, f"malformed answer: {what}")


def huffman_decode(data: bytes) -> bytes:
    """A Huffman-coded HPACK string; its padding must be the most significant bits of EOS, under 8 of them."""
    out, code, length = bytearray(), 0, 0
    for byte in data:
        for shift in range(7, -1, -1):
            code, length = (code << 1) | ((byte >> shift) & 1), length + 1
            symbol = _HUFFMAN.get((length, code))
            if symbol is not None:
                if symbol == _EOS:
                    raise _malformed("EOS inside a Huffman-coded string")
                out.append(symbol)
                code, length = 0, 0
            elif length >= 30:
                raise _malformed("no Huffman code matches")
    if length > 7 or code != (1 << length) - 1:
        raise _malformed("bad padding after a Huffman-coded string")
    return bytes(out)


def _integer(block: bytes, pos: int, prefix: int) -> tuple:
    """An HPACK integer with a `prefix`-bit prefix at `pos`: (value, position after it)."""
    if pos >= len(block):
        raise _malformed("a header block ends inside an integer")
    limit = (1 << prefix) - 1
    value, pos = block[pos] & limit, pos + 1
    if value < limit:
        return value, pos
    shift = 0
    while True:
        if pos >= len(block) or shift > 28:
            raise _malformed("an HPACK integer is cut short or too large")
        byte, pos = block[pos], pos + 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _encode_integer(value: int, prefix: int, first: int = 0) -> bytes:
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes([first | value])
    out, value = bytearray([first | limit]), value - limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: str, value: str) -> bytes:
    """A header as an HPACK literal that is never indexed, with a literal name (no state on either side)."""
    encoded = b"\x10"
    for text in (name, value):
        raw = text.encode("utf-8")
        encoded += _encode_integer(len(raw), 7) + raw
    return encoded


class HeaderDecoder:
    """HPACK's decoding context of one connection: the dynamic table the server's header blocks fill."""

    def __init__(self, limit: int = _TABLE_SIZE):
        self.limit = limit  # the size this client allows the server's table
        self.size_allowed = limit
        self.table = []  # (name, value), newest first
        self.size = 0

    def _entry(self, index: int) -> tuple:
        if 1 <= index <= len(_STATIC):
            return _STATIC[index - 1]
        if len(_STATIC) < index <= len(_STATIC) + len(self.table):
            return self.table[index - len(_STATIC) - 1]
        raise _malformed(f"header index {index} is in neither table")

    def _add(self, name: str, value: str) -> None:
        self.table.insert(0, (name, value))
        self.size += len(name) + len(value) + 32  # octets: every string is held one character per octet
        self._evict()

    def _evict(self) -> None:
        while self.size > self.size_allowed and self.table:
            name, value = self.table.pop()
            self.size -= len(name) + len(value) + 32

    @staticmethod
    def _string(block: bytes, pos: int) -> tuple:
        if pos >= len(block):
            raise _malformed("a header block ends before a string")
        huffman = block[pos] & 0x80
        length, pos = _integer(block, pos, 7)
        if pos + length > len(block):
            raise _malformed("a header string runs past its block")
        raw = block[pos : pos + length]
        text = huffman_decode(raw) if huffman else raw
        return text.decode("latin-1"), pos + length

    def decode(self, block: bytes) -> list:
        """The (name, value) pairs of one whole header block, in order, each string one character per octet
        (latin-1: the octets as sent; a value's text is for its reader to decode)."""
        fields, pos = [], 0
        while pos < len(block):
            byte = block[pos]
            if byte & 0x80:  # indexed
                index, pos = _integer(block, pos, 7)
                fields.append(self._entry(index))
                continue
            if (byte & 0xE0) == 0x20:  # dynamic table size update, allowed only before the block's first field
                if fields:
                    raise _malformed("a dynamic table size update after a header field")
                size, pos = _integer(block, pos, 5)
                if size > self.limit:
                    raise _malformed(f"a dynamic table of {size} bytes is over the {self.limit} allowed")
                self.size_allowed = size
                self._evict()
                continue
            indexing = (byte & 0xC0) == 0x40
            index, pos = _integer(block, pos, 6 if indexing else 4)
            if index:
                name = self._entry(index)[0]
            else:
                name, pos = self._string(block, pos)
            value, pos = self._string(block, pos)
            if indexing:
                self._add(name, value)
            fields.append((name, value))
        return fields


# -- protobuf ---------------------------------------------------------------------------------------------


def _varint(data: bytes, pos: int) -> tuple:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _malformed("a protobuf varint is cut short or too long")
        byte, pos = data[pos], pos + 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def encode_varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1  # negative numbers as two's complement, as protobuf sends them
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_field(number: int, value) -> bytes:
    """One protobuf field: a string, bytes (or an encoded message) or a non-negative integer."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, (bytes, bytearray)):
        return encode_varint(number << 3 | 2) + encode_varint(len(value)) + bytes(value)
    return encode_varint(number << 3) + encode_varint(int(value))


class Message:
    """A protobuf message read into its fields: field number → the values it had, in order (integers for
    varint and fixed-size fields, bytes for length-delimited ones)."""

    def __init__(self, data: bytes):
        self.fields = {}
        pos = 0
        while pos < len(data):
            key, pos = _varint(data, pos)
            number, wire = key >> 3, key & 7
            if wire == 0:
                value, pos = _varint(data, pos)
            elif wire == 2:
                length, pos = _varint(data, pos)
                if pos + length > len(data):
                    raise _malformed("a protobuf field runs past its message")
                value, pos = bytes(data[pos : pos + length]), pos + length
            elif wire in (1, 5):
                width = 8 if wire == 1 else 4
                if pos + width > len(data):
                    raise _malformed("a protobuf field runs past its message")
                value, pos = int.from_bytes(data[pos : pos + width], "little"), pos + width
            else:
                raise _malformed(f"protobuf wire type {wire}")
            if number == 0:
                raise _malformed("protobuf field number 0")
            self.fields.setdefault(number, []).append(value)

    def _last(self, number: int, kind: type):
        values = self.fields.get(number)
        if not values:
            return None
        if not isinstance(values[-1], kind):
            raise _malformed(f"protobuf field {number} has the wrong type")
        return values[-1]

    def text(self, number: int) -> str:
        value = self._last(number, bytes)
        return "" if value is None else value.decode("utf-8", "replace")

    def number(self, number: int) -> int:
        value = self._last(number, int)
        return 0 if value is None else value

    def message(self, number: int) -> Message:
        value = self._last(number, bytes)
        return Message(value or b"")

    def messages(self, number: int) -> list:
        values = self.fields.get(number, [])
        if not all(isinstance(value, bytes) for value in values):
            raise _malformed(f"protobuf field {number} has the wrong type")
        return [Message(value) for value in values]

    def data(self, number: int) -> bytes:
        """Every value of a repeated bytes field, joined (a stream's chunks)."""
        values = self.fields.get(number, [])
        if not all(isinstance(value, bytes) for value in values):
            raise _malformed(f"protobuf field {number} has the wrong type")
        return b"".join(values)


# -- HTTP/2 -----------------------------------------------------------------------------------------------


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


class _Call:
    """One call's stream: what the server answered so far, and how much more this client may send on it."""

    def __init__(self, stream: int, limit: int, window: int):
        self.stream = stream
        self.limit = limit
        self.window = window
        self.data = bytearray()
        self.headers = {}
        self.ended = False
        self.progress = time.monotonic()  # when the server last answered on this stream or let it send more


class Channel:
    """One HTTP/2 connection to a gRPC server on a Unix socket; `call` is safe from several threads."""

    def __init__(self, path: str, timeout: float, metadata: Optional[dict] = None, connect_timeout: float = 5.0):
        self.path = path
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.metadata = dict(metadata or {})
        self._sock = None
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._stream = 1
        self._decoder = HeaderDecoder()
        self._send_frame_size = _MAX_FRAME
        self._send_window = 65535  # what the server lets this client send on the connection, and on a new stream
        self._stream_window = 65535
        self._received = 0  # bytes of DATA since this client last widened the connection's window

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def call(self, method: str, request: bytes = b"", limit: int = MAX_ANSWER, metadata: Optional[dict] = None) -> list:
        """The messages `method` (`/package.Service/Method`) answers to one request message, as bytes; a
        GrpcError with the server's status and message if it fails, or with UNAVAILABLE, DEADLINE_EXCEEDED,
        RESOURCE_EXHAUSTED (an answer over `limit`) or INTERNAL when the socket, the clock or the bytes fail.
        A connection the server closed while idle (a restart, a GOAWAY) is opened again once, and the call
        made again: every method asked this way must be safe to ask twice."""
        with self._lock:
            reused = self._sock is not None
            try:
                return self._guarded(method, [request], limit, metadata)
            except GrpcError as exc:
                if not (reused and exc.status == UNAVAILABLE and not exc.from_server):
                    raise
            return self._guarded(method, [request], limit, metadata)

    def stream(self, method: str, requests: Iterable, limit: int = MAX_ANSWER, metadata: Optional[dict] = None) -> list:
        """As `call`, for a method that takes a stream of request messages: each is sent as the server's flow
        control allows (an iterable, so they need not all be in memory at once). Never made twice."""
        with self._lock:
            return self._guarded(method, requests, limit, metadata)

    def _guarded(self, method: str, requests: Iterable, limit: int, metadata: Optional[dict]) -> list:
        """One call, every failure a GrpcError (or what the requests' iterable raised); a connection a failure
        leaves in doubt is closed."""
        try:
            if self._sock is None:
                self._connect()
            return self._call(method, requests, limit, {**self.metadata, **(metadata or {})})
        except GrpcError as exc:
            if not exc.from_server:
                self.close()
            raise
        except socket.timeout:
            self.close()
            raise GrpcError(DEADLINE_EXCEEDED, f"no answer within {self.timeout:.0f} s") from None
        except OSError as exc:
            self.close()
            raise GrpcError(UNAVAILABLE, f"cannot talk to {self.path}: {exc.strerror or exc}") from None
        except BaseException:
            self.close()
            raise

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(min(self.timeout, self.connect_timeout))
            deadline = time.monotonic() + min(self.timeout, self.connect_timeout)
            while True:
                try:
                    sock.connect(self.path)
                    break
                except BlockingIOError:  # a Unix socket whose backlog is full refuses at once: try again a while
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
            sock.settimeout(self.timeout)
            settings = struct.pack(">HI", 2, 0) + struct.pack(">HI", 4, _WINDOW)  # no push; the widest stream window
            sock.sendall(_PREFACE + _frame(_SETTINGS, 0, 0, settings) + _frame(_WINDOW_UPDATE, 0, 0, struct.pack(">I", _WINDOW - 65535)))
        except BaseException:
            sock.close()
            raise
        self._sock, self._buffer, self._stream, self._decoder = sock, bytearray(), 1, HeaderDecoder()
        self._send_frame_size, self._send_window, self._stream_window, self._received = _MAX_FRAME, 65535, 65535, 0

    def _read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            chunk = self._sock.recv(max(65536, size - len(self._buffer)))
            if not chunk:
                raise GrpcError(UNAVAILABLE, f"{self.path} closed the connection")
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def _read_frame(self) -> tuple:
        header = self._read(9)
        length, kind, flags, stream = int.from_bytes(header[:3], "big"), header[3], header[4], int.from_bytes(header[5:], "big") & 0x7FFFFFFF
        if length > _MAX_FRAME:
            raise _malformed(f"a frame of {length} bytes, over the {_MAX_FRAME} allowed")
        return kind, flags, stream, self._read(length)

    @staticmethod
    def _unpadded(flags: int, payload: bytes, skip: int = 0) -> bytes:
        if flags & _PADDED:
            if not payload or payload[0] + 1 + skip > len(payload):
                raise _malformed("bad padding")
            return payload[1 + skip : len(payload) - payload[0]]
        return payload[skip:]

    def _call(self, method: str, requests: Iterable, limit: int, metadata: dict) -> list:
        call = _Call(self._stream, limit, self._stream_window)
        self._stream += 2
        headers = [(":method", "POST"), (":scheme", "http"), (":path", method), (":authority", "localhost")]
        headers += [("content-type", "application/grpc"), ("te", "trailers"), *sorted(metadata.items())]
        block = b"".join(_literal(name, value) for name, value in headers)
        pieces = [block[i : i + self._send_frame_size] for i in range(0, len(block), self._send_frame_size)]
        self._sock.sendall(
            b"".join(_frame(_HEADERS if i == 0 else _CONTINUATION, _END_HEADERS if i == len(pieces) - 1 else 0, call.stream, p) for i, p in enumerate(pieces))
        )
        previous = None  # each message goes once the next is known, so that the last one ends the stream
        for request in requests:
            if previous is not None:
                self._send(call, previous)
            previous = b"\x00" + struct.pack(">I", len(request)) + request
        self._send(call, previous or b"", end=True)
        while not call.ended:
            self._handle(call)
        return self._messages(call.headers, bytes(call.data))

    def _send(self, call: _Call, body: bytes, end: bool = False) -> None:
        """DATA frames of `body` on the call's stream, as fast as the server's windows allow; the last one ends
        the stream if `end`. Nothing more is sent once the server has answered (it failed the call early)."""
        pos = 0
        while not call.ended:
            room = min(self._send_window, call.window, self._send_frame_size)
            if room <= 0 and pos < len(body):
                self._handle(call)  # until a WINDOW_UPDATE
                continue
            piece = body[pos : pos + room]
            pos += len(piece)
            last = pos >= len(body)
            if piece or (last and end):
                self._sock.sendall(_frame(_DATA, _END_STREAM if last and end else 0, call.stream, piece))
                self._send_window, call.window = self._send_window - len(piece), call.window - len(piece)
            if last:
                return

    def _handle(self, call: _Call) -> None:
        """Read one frame and act on it: the call's headers and messages, or the connection's own business."""
        kind, flags, on, payload = self._read_frame()
        if kind == _SETTINGS:
            if not flags & _ACK:
                self._settings(payload, call)
        elif kind == _PING:
            if not flags & _ACK:
                self._sock.sendall(_frame(_PING, _ACK, 0, payload))
        elif kind == _WINDOW_UPDATE:
            if len(payload) != 4:
                raise _malformed("a WINDOW_UPDATE frame of the wrong size")
            increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
            if on == 0:
                self._send_window += increment
                if not increment or self._send_window > _WINDOW:
                    raise _malformed("a WINDOW_UPDATE of 0, or past the largest window")
            elif on == call.stream:
                call.window += increment
                if not increment or call.window > _WINDOW:
                    raise _malformed("a WINDOW_UPDATE of 0, or past the largest window")
                call.progress = time.monotonic()
        elif kind == _GOAWAY:
            last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF if len(payload) >= 8 else 0
            if last < call.stream:
                raise GrpcError(UNAVAILABLE, f"{self.path} is closing the connection (HTTP/2 GOAWAY)")
        elif kind == _HEADERS:
            block = bytearray(self._unpadded(flags, payload, 5 if flags & _PRIORITY else 0))
            ends, last = flags & _END_STREAM, flags  # END_STREAM is the HEADERS frame's, END_HEADERS the last frame's
            while not last & _END_HEADERS:
                kind, last, following, payload = self._read_frame()
                if kind != _CONTINUATION or following != on:
                    raise _malformed("a header block is interrupted")
                block += payload
                if len(block) > _MAX_HEADER_BLOCK:
                    raise _malformed(f"a header block over {_MAX_HEADER_BLOCK} bytes")
            fields = self._decoder.decode(bytes(block))  # every block, to keep the dynamic table in step
            if on == call.stream:
                call.headers.update(fields)
                call.ended, call.progress = bool(ends), time.monotonic()
        elif kind in (_CONTINUATION, _PUSH_PROMISE):
            raise _malformed("an unexpected CONTINUATION or PUSH_PROMISE frame")
        elif kind == _DATA:
            self._received += len(payload)
            if on == call.stream:
                call.data += self._unpadded(flags, payload)
                if len(call.data) > call.limit:
                    raise GrpcError(RESOURCE_EXHAUSTED, f"the answer is over the {call.limit} bytes allowed")
                call.ended, call.progress = bool(flags & _END_STREAM), time.monotonic()
            if self._received > _WINDOW // 2:
                self._sock.sendall(_frame(_WINDOW_UPDATE, 0, 0, struct.pack(">I", self._received)))
                self._received = 0
        elif kind == _RST_STREAM and on == call.stream:
            code = int.from_bytes(payload[:4], "big") if len(payload) >= 4 else -1
            raise GrpcError(UNAVAILABLE, f"{self.path} reset the call (HTTP/2 error {code})")
        if not call.ended and time.monotonic() - call.progress > self.timeout:  # frames, but none that move the call
            raise GrpcError(DEADLINE_EXCEEDED, f"no answer within {self.timeout:.0f} s")

    def _settings(self, payload: bytes, call: _Call) -> None:
        if len(payload) % 6:
            raise _malformed("a SETTINGS frame of the wrong size")
        for pos in range(0, len(payload), 6):
            key, value = struct.unpack(">HI", payload[pos : pos + 6])
            if key == _SETTING_MAX_FRAME and 16384 <= value < 2**24:
                self._send_frame_size = min(value, _MAX_FRAME)
            elif key == _SETTING_WINDOW:  # it moves the window of every open stream by as much
                if value > _WINDOW:
                    raise _malformed("an initial window past the largest window")
                call.window += value - self._stream_window
                self._stream_window = value
        self._sock.sendall(_frame(_SETTINGS, _ACK, 0))

    @staticmethod
    def _messages(headers: dict, data: bytes) -> list:
        if headers.get(":status", "200") != "200":
            raise GrpcError(UNAVAILABLE, f"the server answered HTTP status {headers.get(':status')}")
        status = headers.get("grpc-status", "")
        if not (status.isascii() and status.isdigit() and len(status) <= 3):
            raise _malformed("no grpc-status in the answer")
        if int(status) != OK:  # its message: UTF-8, percent-encoded
            message = unquote_to_bytes(headers.get("grpc-message", "").encode("latin-1")).decode("utf-8", "replace")
            raise GrpcError(int(status), message or f"gRPC status {status}", from_server=True)
        messages, pos = [], 0
        while pos < len(data):
            if pos + 5 > len(data):
                raise _malformed("a message is cut short")
            compressed, length = data[pos], int.from_bytes(data[pos + 1 : pos + 5], "big")
            if compressed:
                raise _malformed("a compressed message (none was asked for)")
            if pos + 5 + length > len(data):
                raise _malformed("a message is cut short")
            messages.append(data[pos + 5 : pos + 5 + length])
            pos += 5 + length
        return messages
