"""The gRPC client the containerd store asks containerd with: HPACK and protobuf decoding checked against
the `hpack` library and with Hypothesis, and the client against a scripted server that sends what a real
containerd never does. Every failure must be a GrpcError (a DockyardError with a reason, from the store),
never another exception, and a broken connection must not spoil the next call."""

from __future__ import annotations

import re
import shutil
import struct
import tempfile
import time

import pytest
from hpack import Encoder
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.dockyard.images.plugins.module_utils import _grpc
from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._grpc import (
    DEADLINE_EXCEEDED,
    INTERNAL,
    NOT_FOUND,
    RESOURCE_EXHAUSTED,
    UNAVAILABLE,
    Channel,
    GrpcError,
    HeaderDecoder,
    Message,
    encode_field,
    huffman_decode,
)
from ansible_collections.dockyard.images.plugins.module_utils._manifest import Descriptor
from ansible_collections.dockyard.images.plugins.module_utils._stores._containerd import ContainerdStore
from support.grpc_server import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PING,
    RST_STREAM,
    SETTINGS,
    ScriptedGrpcServer,
    frame,
    grpc_message,
)

header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
header_names = st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20)


def test_the_huffman_code_is_rfc_7541_s():
    """Every symbol's code, rebuilt from the code lengths, is the code of RFC 7541 Appendix B."""
    rebuilt = {symbol: (length, code) for (length, code), symbol in _grpc._HUFFMAN.items()}
    assert [rebuilt[symbol] for symbol in range(257)] == list(zip(REQUEST_CODES_LENGTH, REQUEST_CODES))


@given(st.binary(max_size=200))
def test_huffman_strings_decode_to_what_was_encoded(data):
    assert huffman_decode(HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(data)) == data


@settings(max_examples=200)
@given(st.lists(st.lists(st.tuples(header_names, header_text), max_size=8), max_size=6), st.booleans(), st.sampled_from([4096, 256, 64]))
def test_header_blocks_decode_as_the_hpack_library_encoded_them(blocks, huffman, table_size):
    """Blocks in a row share the dynamic table the encoder fills, resized as the encoder says."""
    encoder, decoder = Encoder(), HeaderDecoder()
    encoder.header_table_size = table_size
    for headers in blocks:
        assert decoder.decode(encoder.encode(headers, huffman=huffman)) == headers


@given(st.binary(max_size=300))
def test_any_bytes_decode_or_fail_as_malformed(data):
    for decode in (HeaderDecoder().decode, huffman_decode, Message):
        try:
            decode(data)
        except GrpcError as exc:
            assert exc.status == INTERNAL and exc.message.startswith("malformed answer")


@given(st.integers(min_value=1, max_value=2**29 - 1), st.one_of(st.text(max_size=40), st.binary(max_size=40), st.integers(0, 2**63 - 1)))
def test_protobuf_fields_read_back_as_written(number, value):
    message = Message(encode_field(number, value) + encode_field(number + 1 if number < 2**29 - 1 else 1, "next"))
    if isinstance(value, int):
        assert message.number(number) == value
    elif isinstance(value, str):
        assert message.text(number) == value
    else:
        assert message.data(number) == value


def test_a_field_of_the_wrong_type_is_malformed():
    with pytest.raises(GrpcError, match="wrong type"):
        Message(encode_field(1, 7)).text(1)


@pytest.fixture
def socket_dir():
    folder = tempfile.mkdtemp(prefix="dy-grpc-", dir="/tmp")  # a Unix socket's path must stay short
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def serve(socket_dir):
    servers = []

    def start(answer) -> ScriptedGrpcServer:
        servers.append(ScriptedGrpcServer(f"{socket_dir}/grpc.sock", answer).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def test_a_call_sends_its_method_and_metadata_and_reads_every_message(serve):
    server = serve(lambda answers, stream, headers: answers.ok(stream, [encode_field(1, "first"), encode_field(1, "second")]))
    channel = Channel(server.path, 5, {"containerd-namespace": "k8s.io"})
    answers = channel.call("/containerd.services.images.v1.Images/List", encode_field(1, "a filter"))
    assert [Message(answer).text(1) for answer in answers] == ["first", "second"]
    call = server.calls[0]
    assert call[":path"] == "/containerd.services.images.v1.Images/List" and call[":method"] == "POST"
    assert call["content-type"] == "application/grpc" and call["te"] == "trailers" and call["containerd-namespace"] == "k8s.io"
    request = [payload for kind, _flags, _stream, payload in server.frames if kind == DATA]
    assert request == [grpc_message(encode_field(1, "a filter"))]
    assert len(channel.call("/x.Y/Z")) == 2 and server.connections == 1  # the connection serves the next call


def test_a_failed_call_carries_the_server_s_status_and_message(serve):
    server = serve(lambda answers, stream, headers: answers.status(stream, NOT_FOUND, "content digest sha256:abc: not%20found"))
    with pytest.raises(GrpcError) as failed:
        Channel(server.path, 5).call("/containerd.services.content.v1.Content/Read")
    assert failed.value.status == NOT_FOUND and failed.value.message == "content digest sha256:abc: not found"


def test_padding_continuation_pings_and_settings_amid_an_answer_are_read(serve):
    def answer(answers, stream, headers):
        block = answers.encoder.encode([(":status", "200"), ("content-type", "application/grpc")])
        padded = bytes([3]) + grpc_message(encode_field(1, "padded")) + b"\0\0\0"
        return (
            frame(HEADERS, 0, stream, block[:2])
            + frame(9, END_HEADERS, stream, block[2:])
            + frame(PING, 0, 0, b"12345678")
            + frame(SETTINGS, 0, 0, struct.pack(">HI", 5, 32768))
            + frame(DATA, 0x8, stream, padded)
            + answers.headers(stream, [("grpc-status", "0")], end=True)
        )

    server = serve(answer)
    assert [Message(m).text(1) for m in Channel(server.path, 5).call("/a.B/C")] == ["padded"]
    assert server.wait_for_frame(lambda sent: sent == (PING, 1, 0, b"12345678"))  # the PING answered
    assert server.wait_for_frame(lambda sent: sent[:2] == (SETTINGS, 1))  # the SETTINGS acknowledged


@pytest.mark.parametrize(
    "reply, status, words",
    [
        (lambda a, s: frame(DATA, 0, s, b"x" * 20000), INTERNAL, "frame of 20000 bytes"),
        (lambda a, s: a.ok(s, [b"x" * 3000]), RESOURCE_EXHAUSTED, "over the 1000 bytes allowed"),
        (
            lambda a, s: (a.headers(s, [(":status", "200")]) + frame(DATA, 0, s, grpc_message(b"cut")[:-1]), "close"),
            UNAVAILABLE,
            "closed the connection|Broken pipe|Connection reset",
        ),
        (lambda a, s: frame(RST_STREAM, 0, s, struct.pack(">I", 2)), UNAVAILABLE, r"reset the call \(HTTP/2 error 2\)"),
        (lambda a, s: a.headers(s, [(":status", "503")], end=True), UNAVAILABLE, "HTTP status 503"),
        (lambda a, s: a.headers(s, [(":status", "200")], end=True), INTERNAL, "no grpc-status"),
        (
            lambda a, s: (
                a.headers(s, [(":status", "200")]) + frame(DATA, 0, s, grpc_message(b"z", compressed=True)) + a.headers(s, [("grpc-status", "0")], end=True)
            ),
            INTERNAL,
            "compressed",
        ),
        (lambda a, s: frame(HEADERS, END_HEADERS | END_STREAM, s, b"\xff\xff\xff\xff\xff\xff"), INTERNAL, "malformed"),
        (lambda a, s: frame(7, 0, 0, struct.pack(">II", 0, 0)), UNAVAILABLE, "GOAWAY"),
    ],
    ids=["huge-frame", "over-limit", "cut-short", "reset", "http-503", "no-status", "compressed", "bad-hpack", "goaway"],
)
def test_a_broken_answer_fails_the_call_and_the_next_call_reconnects(serve, reply, status, words):
    replies = iter([reply, lambda a, s: a.ok(s, [encode_field(1, "fine")])])
    server = serve(lambda answers, stream, headers: next(replies)(answers, stream))
    channel = Channel(server.path, 5)
    with pytest.raises(GrpcError) as failed:
        channel.call("/a.B/C", limit=1000)
    assert failed.value.status == status and re.search(words, failed.value.message)
    assert Message(channel.call("/a.B/C")[0]).text(1) == "fine" and server.connections == 2


def test_a_server_that_says_nothing_fails_the_call_at_its_deadline(serve):
    server = serve(lambda answers, stream, headers: None)
    with pytest.raises(GrpcError) as failed:
        Channel(server.path, 0.3).call("/a.B/C")
    assert failed.value.status == DEADLINE_EXCEEDED


def test_the_containerd_store_turns_every_broken_answer_into_a_reason(serve):
    """What the store makes of containerd's failures: reasons a task reports, with the socket and namespace named."""
    server = serve(lambda answers, stream, headers: answers.status(stream, 13, "boltdb: corrupt"))
    store = ContainerdStore(server.path, "k8s.io", timeout=5)
    with pytest.raises(DockyardError) as failed:
        store.image_names()
    assert failed.value.reason == "engine_error" and f"containerd at {server.path} (namespace k8s.io)" in failed.value.message
    assert "boltdb: corrupt" in failed.value.message and "journalctl -u containerd" in failed.value.message
    server.stop()
    with pytest.raises(DockyardError) as failed:
        ContainerdStore(server.path, "k8s.io", timeout=5).content()
    assert failed.value.reason == "unreachable" and "is containerd running" in failed.value.message


def test_a_status_or_message_that_is_not_plain_text_fails_cleanly(serve):
    """grpc-status in other digits than ASCII's is malformed; a grpc-message that is not UTF-8 is read with
    replacement characters, never as text a task result cannot carry."""
    replies = iter(
        [
            lambda a, s: a.headers(s, [(":status", "200"), ("grpc-status", "\u00b2")], end=True),
            lambda a, s: a.headers(s, [(":status", "200"), ("grpc-status", "13"), ("grpc-message", "bad %FF%FE bytes \xff")], end=True),
        ]
    )
    server = serve(lambda answers, stream, headers: next(replies)(answers, stream))
    with pytest.raises(GrpcError, match="no grpc-status") as failed:
        Channel(server.path, 5).call("/a.B/C")
    assert failed.value.status == INTERNAL
    with pytest.raises(GrpcError) as failed:
        Channel(server.path, 5).call("/a.B/C")
    assert failed.value.status == INTERNAL and failed.value.from_server
    failed.value.message.encode("utf-8")  # no lone surrogate
    assert failed.value.message.startswith("bad \ufffd\ufffd bytes")


def test_trailers_over_continuation_end_the_call_and_a_header_flood_is_refused(serve):
    def answer(answers, stream, headers):
        trailers = answers.encoder.encode([("grpc-status", "0"), ("grpc-message", "")])
        start = answers.headers(stream, [(":status", "200")]) + frame(DATA, 0, stream, grpc_message(encode_field(1, "split")))
        if headers[":path"] == "/a.B/Split":
            return start + frame(HEADERS, END_STREAM, stream, trailers[:1]) + frame(CONTINUATION, END_HEADERS, stream, trailers[1:])
        return start + frame(HEADERS, 0, stream, b"") + b"".join(frame(CONTINUATION, 0, stream, b"\0" * 16384) for _piece in range(8))

    server = serve(answer)
    assert [Message(m).text(1) for m in Channel(server.path, 2).call("/a.B/Split")] == ["split"]
    with pytest.raises(GrpcError, match="header block over") as failed:
        Channel(server.path, 2).call("/a.B/Flood")
    assert failed.value.status == INTERNAL


def test_a_server_that_only_pings_fails_the_call_at_its_deadline(serve):
    def answer(answers, stream, headers):
        return b"".join(frame(PING, 0, 0, b"%08d" % i) for i in range(40))  # frames, none of them an answer

    server = serve(answer)
    channel = Channel(server.path, 0.3)
    original = channel._read_frame

    def slow_read_frame():
        time.sleep(0.02)
        return original()

    channel._read_frame = slow_read_frame
    started = time.monotonic()
    with pytest.raises(GrpcError) as failed:
        channel.call("/a.B/C")
    assert failed.value.status == DEADLINE_EXCEEDED and time.monotonic() - started < 2


def test_an_idle_connection_the_server_closed_is_opened_again_once(serve):
    def answer(answers, stream, headers):
        if stream == 3:  # the server went away meanwhile: it answers the next call with a GOAWAY, and closes
            return frame(GOAWAY, 0, 0, struct.pack(">II", 1, 0)), "close"
        return answers.ok(stream, [encode_field(1, f"call on stream {stream}")])

    server = serve(answer)
    channel = Channel(server.path, 5)
    assert Message(channel.call("/a.B/C")[0]).text(1) == "call on stream 1"
    assert Message(channel.call("/a.B/C")[0]).text(1) == "call on stream 1", "asked again on a new connection"
    assert server.connections == 2


def test_every_malformed_answer_is_a_reason_from_the_store(serve, socket_dir):
    """Fields of the wrong type anywhere in containerd's answers, an answer over the size a config may have, and a
    spooled blob that cannot be read: each a DockyardError with its reason, never another exception."""

    def answer(answers, stream, headers):
        path = headers[":path"]
        if path.endswith("Content/Read"):
            return answers.ok(stream, [encode_field(2, b"x" * 16000)] * 1100)  # 17.6 MB: over what a config may be
        if path.endswith("Content/Write"):
            return answers.ok(stream, [encode_field(1, b"not a number")])
        return answers.ok(stream, [encode_field(1, 7)])  # a number where a message belongs

    server = serve(answer)
    store = ContainerdStore(server.path, "k8s.io", timeout=5)
    for ask in (store.image_names, store.content, store.api.version, store.api.containers, store.api.task_states, store.api.namespaces):
        with pytest.raises(DockyardError) as failed:
            ask()
        assert failed.value.reason == "engine_error" and "wrong type" in failed.value.message, ask
    with pytest.raises(DockyardError) as failed:
        store.blob("sha256:" + "a" * 64)
    assert failed.value.reason == "store_corrupt"
    blob = f"{socket_dir}/blob"
    with open(blob, "wb") as handle:
        handle.write(b"data")
    descriptor = Descriptor("application/octet-stream", "sha256:" + "b" * 64, 4)
    with pytest.raises(DockyardError) as failed:
        store.api.write("lease", descriptor, blob)
    assert failed.value.reason == "engine_error" and "wrong type" in failed.value.message
    with pytest.raises(DockyardError) as failed:
        store.api.write("lease", descriptor, f"{socket_dir}/gone")
    assert failed.value.reason == "engine_error" and "cannot read" in failed.value.message and "does not answer" not in failed.value.message
