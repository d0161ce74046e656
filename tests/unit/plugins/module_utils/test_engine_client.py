"""EngineClient's HTTP over the engine's socket, against a scripted engine that answers each connection as a
test says: connections kept for the next request, one the engine closed while idle replaced without a
failure, a body sent in chunks, an answer that stops half-way, an engine that answers before it has read
the whole body, and one that never answers."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import tempfile
import time
from typing import Callable

import pytest

from ansible_collections.dockyard.images.plugins.module_utils._errors import DockyardError
from ansible_collections.dockyard.images.plugins.module_utils._stores._engine import EngineClient
from support.sockets import UnixListener

VERSION = b'{"ApiVersion": "1.41", "Version": "20.10.24", "Components": [{"Name": "Engine"}]}'


class Request:
    """One request as the engine read it."""

    def __init__(self, head: bytes, body: bytes, connection: int):
        lines = head.decode("latin-1").split("\r\n")
        self.method, self.target, _version = lines[0].split(" ")
        self.headers = {name.lower(): value for name, _sep, value in (line.partition(": ") for line in lines[1:] if line)}
        self.body, self.connection = body, connection


class ScriptedEngine:
    """A unix socket whose connections are each served by `serve(engine, connection, number)`, logging every request."""

    def __init__(self, serve: Callable):
        self.folder = tempfile.mkdtemp(dir="/tmp")  # short: a unix socket path has a length limit
        self.path = os.path.join(self.folder, "engine.sock")
        self.requests = []
        self.listener = UnixListener(self.path, lambda connection, number: serve(self, connection, number)).start()

    @property
    def connections(self) -> int:
        return self.listener.connections

    @property
    def client(self) -> EngineClient:
        return EngineClient(f"unix://{self.path}", timeout=2.0)

    def read(self, connection: socket.socket, number: int, whole_body: bool = True):
        """The next request on the connection (its body read too, unless told not to), None at its end."""
        head = b""
        while b"\r\n\r\n" not in head:
            data = connection.recv(65536)
            if not data:
                return None
            head += data
        head, _sep, rest = head.partition(b"\r\n\r\n")
        request = Request(head, b"", number)
        if whole_body:
            request.body = self._body(connection, request.headers, rest)
        self.requests.append(request)
        return request

    @staticmethod
    def _body(connection: socket.socket, headers: dict, rest: bytes) -> bytes:
        if headers.get("transfer-encoding") != "chunked":
            length = int(headers.get("content-length") or 0)
            while len(rest) < length:
                rest += connection.recv(65536)
            return rest[:length]
        body, buffered = b"", rest
        while True:
            while b"\r\n" not in buffered:
                buffered += connection.recv(65536)
            size_line, _sep, buffered = buffered.partition(b"\r\n")
            size = int(size_line, 16)
            while len(buffered) < size + 2:
                buffered += connection.recv(65536)
            body, buffered = body + buffered[:size], buffered[size + 2 :]
            if size == 0:
                return body

    @staticmethod
    def answer(connection: socket.socket, status: int = 200, body: bytes = b"{}", close: bool = False) -> None:
        extra = b"Connection: close\r\n" if close else b""
        connection.sendall(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (status, len(body), extra, body))

    def close(self) -> None:
        self.listener.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def engine_with():
    made = []

    def make(serve: Callable) -> ScriptedEngine:
        made.append(ScriptedEngine(serve))
        return made[-1]

    yield make
    for engine in made:
        engine.close()


def after_version(act: Callable, whole_body: bool = True) -> Callable:
    """A connection's server: /version answered as an engine's, every other request by `act(engine, connection,
    request)`, which ends the connection by returning True."""

    def serve(engine: ScriptedEngine, connection: socket.socket, number: int) -> None:
        while (request := engine.read(connection, number, whole_body)) is not None:
            if request.target == "/version":
                engine.answer(connection, body=VERSION)
            elif act(engine, connection, request):
                return

    return serve


def answering(engine: ScriptedEngine, connection: socket.socket, number: int) -> None:
    """Answers every request on the connection: /version, else the request's own body length as JSON."""
    while (request := engine.read(connection, number)) is not None:
        engine.answer(connection, body=VERSION if request.target == "/version" else json.dumps({"length": len(request.body)}).encode())


def test_requests_share_one_connection(engine_with):
    engine = engine_with(answering)
    client = engine.client
    for _round in range(3):
        assert client.get_json("/images/json") == {"length": 0}
    assert engine.connections == 1 and len(engine.requests) == 4, "the version and three listings, on one connection"


def test_a_connection_the_engine_closed_while_idle_is_replaced_even_for_a_body_sent_in_chunks(engine_with):
    def one_request_each(engine, connection, number):
        request = engine.read(connection, number)
        engine.answer(connection, body=VERSION if request.target == "/version" else json.dumps({"length": len(request.body)}).encode())
        # the engine then closes the connection, as an engine restarting or timing idle connections out does

    engine = engine_with(one_request_each)
    client = engine.client
    assert client.get_json("/images/json") == {"length": 0}
    time.sleep(0.1)
    chunks = [b"a" * 1000, b"b" * 3000]
    events = list(client.stream("POST", "/images/load", data=iter(chunks)))
    assert events == [{"length": 4000}], "the whole body, once, on a new connection"
    assert client.call("DELETE", "/images/x").json() == {"length": 0}
    assert engine.connections == 4


def test_an_answer_that_stops_half_way_is_unreachable_and_the_next_request_gets_a_new_connection(engine_with):
    def half(engine, connection, request):
        if request.method == "POST" or request.target.endswith("/images/get"):
            connection.sendall(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{"status":"one"}\r\n5\r\n{"st')
            return True
        engine.answer(connection)
        return False

    engine = engine_with(after_version(half))
    client = engine.client
    with pytest.raises(DockyardError) as broken:
        list(client.stream("POST", "/images/create"))
    assert broken.value.reason == "unreachable" and "broke off its answer to POST /images/create" in broken.value.message
    assert client.get_json("/images/json") == {}
    with pytest.raises(DockyardError) as cut:
        client.download("/images/get", open(os.devnull, "wb"))  # noqa: SIM115
    assert cut.value.reason == "unreachable"


def test_an_engine_that_refuses_before_reading_the_whole_body_is_heard(engine_with):
    def refusing(engine, connection, _request):
        engine.answer(connection, 500, b'{"message": "no space left on device"}', close=True)
        connection.shutdown(socket.SHUT_RDWR)
        return True

    engine = engine_with(after_version(refusing, whole_body=False))
    client = engine.client
    client.info()
    endless = (b"x" * 65536 for _chunk in range(10_000))  # 650 MB: far more than a socket buffers
    with pytest.raises(DockyardError) as refused:
        list(client.stream("POST", "/images/load", data=endless))
    assert refused.value.reason == "engine_error" and "(HTTP 500): no space left on device" in refused.value.message


def test_an_engine_that_never_answers_is_unreachable_within_the_timeout(engine_with):
    def silent(engine, connection, number):
        while engine.read(connection, number) is not None:
            time.sleep(5)

    engine = engine_with(silent)
    started = time.monotonic()
    with pytest.raises(DockyardError) as silence:
        engine.client.get_json("/images/json")
    assert silence.value.reason == "unreachable" and time.monotonic() - started < 4


def test_a_download_writes_the_exact_bytes_and_a_full_disk_is_the_callers_to_tell(engine_with, tmp_path):
    archive = os.urandom(3 * 1024 * 1024 + 5)

    def saving(_engine, connection, _request):
        connection.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for start in range(0, len(archive), 1_000_000):
            piece = archive[start : start + 1_000_000]
            connection.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        connection.sendall(b"0\r\n\r\n")
        return False

    engine = engine_with(after_version(saving))
    client = engine.client
    with open(tmp_path / "saved.tar", "wb") as out:
        client.download("/images/get", out, params=[("names", "a"), ("names", "b")])
    assert (tmp_path / "saved.tar").read_bytes() == archive
    assert engine.requests[-1].target.endswith("/images/get?names=a&names=b")

    class Full:
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as full:
        client.download("/images/get", Full())
    assert full.value.errno == errno.ENOSPC


def test_a_progress_stream_cut_between_two_messages_is_unreachable_not_a_quiet_end(engine_with):
    def cut(_engine, connection, _request):
        message = b'{"status":"Loading layer"}\r\n'  # one chunk a message, as Docker sends them; no last chunk
        connection.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(message), message))
        return True

    engine = engine_with(after_version(cut))
    with pytest.raises(DockyardError) as broken:
        list(engine.client.stream("POST", "/images/load", data=b"tar"))
    assert broken.value.reason == "unreachable" and "broke off" in broken.value.message


def test_an_engine_that_stops_reading_the_body_is_unreachable_within_the_send_timeout(engine_with):
    def stalled(_engine, _connection, _request):
        time.sleep(10)  # reads nothing more, answers nothing, keeps the connection open
        return True

    engine = engine_with(after_version(stalled, whole_body=False))
    client = engine.client
    client.info()
    endless = (b"x" * 65536 for _chunk in range(10_000))
    started = time.monotonic()
    with pytest.raises(DockyardError) as stalled_send:
        client.call("POST", "/images/load", data=endless, stream=True, timeout=(1, None))
    assert stalled_send.value.reason == "unreachable" and time.monotonic() - started < 5


def test_a_post_is_never_sent_twice_even_on_a_connection_that_served_before(engine_with):
    def answers_one_then_drops_the_post(engine, connection, number):
        while (request := engine.read(connection, number)) is not None:
            if request.method == "POST":
                return  # read it, maybe acted on it, then closed without an answer
            engine.answer(connection, body=VERSION if request.target == "/version" else b"{}")

    engine = engine_with(answers_one_then_drops_the_post)
    client = engine.client
    client.get_json("/images/json")
    with pytest.raises(DockyardError) as dropped:
        client.call("POST", "/images/app/tag", params={"repo": "team/app", "tag": "2"})
    assert dropped.value.reason == "unreachable"
    assert [request.method for request in engine.requests].count("POST") == 1


def test_idle_connections_are_kept_in_a_process_holding_more_than_1024_files(engine_with):
    engine = engine_with(answering)
    held = [os.open(os.devnull, os.O_RDONLY) for _file in range(1100)]
    try:
        client = engine.client
        for _round in range(3):
            assert client.get_json("/images/json") == {"length": 0}
    finally:
        for descriptor in held:
            os.close(descriptor)
    assert engine.connections == 1


@pytest.mark.parametrize(
    ("status", "body", "reason", "says"),
    [
        (500, b"123", "engine_error", "(HTTP 500): 123"),
        (500, b'{"message": 5}', "engine_error", '(HTTP 500): {"message": 5}'),
        (409, b'["in use"]', "in_use", '(HTTP 409): ["in use"]'),
        (200, b"<html>not json</html>", "engine_error", "what is not JSON: '<html>not json</html>'"),
    ],
)
def test_whatever_an_engine_answers_is_an_error_with_a_reason_never_a_traceback(engine_with, status, body, reason, says):
    def odd(engine, connection, _request):
        engine.answer(connection, status, body)
        return False

    engine = engine_with(after_version(odd))
    with pytest.raises(DockyardError) as failed:
        engine.client.get_json("/images/json")
    assert failed.value.reason == reason and says in failed.value.message


def test_an_engine_whose_version_is_no_object_is_an_engine_error(engine_with):
    def listing(engine, connection, number):
        while engine.read(connection, number) is not None:
            engine.answer(connection, body=b"[]")

    with pytest.raises(DockyardError) as failed:
        engine_with(listing).client.info()
    assert failed.value.reason == "engine_error" and "not an engine's version" in failed.value.message


@pytest.mark.parametrize("docker_host", ["unix://var/run/docker.sock", "tcp://127.0.0.1:2375", "unix://"])
def test_a_docker_host_that_names_no_socket_path_plainly_is_refused(docker_host):
    with pytest.raises(DockyardError) as refused:
        EngineClient(docker_host)
    assert refused.value.reason == "invalid_argument" and "unix:///var/run/docker.sock" in refused.value.message
