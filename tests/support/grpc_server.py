"""A gRPC server on a Unix socket that answers each call with the bytes its test scripts: what a real
containerd never sends (frames too large, answers cut short, resets, silence, malformed HPACK or
protobuf), and what it may send but rarely does (padding, headers split over CONTINUATION frames,
PINGs and SETTINGS between the frames of an answer).

It logs every call with all its headers (`calls`), and every frame the client sent (`frames`), so a
test can tell what the client asked for and how it answered the server's PINGs and SETTINGS."""

from __future__ import annotations

import socket
import struct
import time
from typing import Callable, Optional, Union

from hpack import Decoder, Encoder

from support.sockets import UnixListener

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED = 0x4, 0x8
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def grpc_message(body: bytes, compressed: bool = False) -> bytes:
    return bytes([1 if compressed else 0]) + struct.pack(">I", len(body)) + body


class Answers:
    """Builds an answer's frames with one HPACK encoder per connection, as a server keeps one."""

    def __init__(self):
        self.encoder = Encoder()

    def headers(self, stream: int, fields: list, end: bool = False, huffman: bool = True) -> bytes:
        return frame(HEADERS, END_HEADERS | (END_STREAM if end else 0), stream, self.encoder.encode(fields, huffman=huffman))

    def ok(self, stream: int, messages: list) -> bytes:
        """What a well-behaved server answers: headers, each message in a DATA frame, trailers with status 0."""
        body = b"".join(frame(DATA, 0, stream, grpc_message(message)) for message in messages)
        start = self.headers(stream, [(":status", "200"), ("content-type", "application/grpc")])
        return start + body + self.headers(stream, [("grpc-status", "0"), ("grpc-message", "")], end=True)

    def status(self, stream: int, code: int, message: str) -> bytes:
        """A trailers-only answer: the call failed with `code` and the (percent-encoded) `message`."""
        fields = [(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", str(code)), ("grpc-message", message)]
        return self.headers(stream, fields, end=True)


class ScriptedGrpcServer:
    """`answer(answers, stream, headers)` gives the bytes to send for each call: None says nothing, and
    (bytes, "close") closes the connection once they are sent."""

    def __init__(self, path: str, answer: Callable[[Answers, int, dict], Optional[Union[bytes, tuple]]]):
        self.path = path
        self.answer = answer
        self.calls = []  # the headers of each call, in order
        self.frames = []  # (kind, flags, stream, payload) of every frame a client sent
        self._listener = UnixListener(path, self._serve)

    @property
    def connections(self) -> int:
        return self._listener.connections

    def start(self) -> ScriptedGrpcServer:
        self._listener.start()
        return self

    def stop(self) -> None:
        """Stop listening; the socket file stays, as a stopped containerd's does (connecting is then refused)."""
        self._listener.stop()

    def wait_for_frame(self, wanted: Callable[[tuple], bool], timeout: float = 5.0) -> bool:
        """Whether the client sent a frame `wanted` accepts, within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(wanted(sent) for sent in list(self.frames)):
                return True
            time.sleep(0.01)
        return False

    @staticmethod
    def _read(conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def _serve(self, conn: socket.socket, _number: int) -> None:
        decoder, answers, blocks = Decoder(), Answers(), {}
        if self._read(conn, len(PREFACE)) != PREFACE:
            return
        conn.sendall(frame(SETTINGS, 0, 0))
        while True:
            header = self._read(conn, 9)
            length, kind, flags, stream = int.from_bytes(header[:3], "big"), header[3], header[4], int.from_bytes(header[5:], "big")
            payload = self._read(conn, length)
            self.frames.append((kind, flags, stream, payload))
            if kind in (HEADERS, CONTINUATION):
                blocks[stream] = blocks.get(stream, b"") + payload
                if flags & END_HEADERS:
                    self.calls.append(dict(decoder.decode(blocks.pop(stream))))
            elif kind == DATA and flags & END_STREAM:
                reply = self.answer(answers, stream, self.calls[-1])
                if isinstance(reply, tuple):
                    conn.sendall(reply[0])
                    return
                if reply is not None:
                    conn.sendall(reply)
