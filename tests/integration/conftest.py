"""Fixtures that own real services: registries, a fault proxy, and the images pushed to them."""

from __future__ import annotations

import bcrypt
import pytest
import requests
import trustme

from support.engines import ContainerdService, DockerEngine, PodmanService
from support.images import Image, Index, Pusher, make_layer, random_layer
from support.proxy import FaultProxy
from support.registry import PASSWORD, USER, RegistryServer
from support.token_issuer import ISSUER, SERVICE, TokenIssuer


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    server = RegistryServer(str(tmp_path_factory.mktemp("registry"))).start()
    yield server
    server.stop()


class Corpus:
    """The test images, pushed once per session: built by the tests, real tar+gzip layers."""

    def __init__(self, pusher: Pusher):
        oci = "application/vnd.oci.image.manifest.v1+json"
        self.base = make_layer({"etc/os-release": b"ID=dockyard-test\n", "bin/sh": b"#!shell\n" * 512})
        self.app = Image([self.base, make_layer({"app/app.py": b"print('app')\n" * 100})], labels={"name": "app"})
        self.worker = Image([self.base, make_layer({"app/worker.py": b"print('worker')\n" * 100})], labels={"name": "worker"})
        self.oci = Image([make_layer({"srv/oci.txt": b"oci\n"})], media_type=oci)
        self.amd64 = Image([self.base, make_layer({"arch": b"amd64\n"})], architecture="amd64", media_type=oci)
        self.arm64 = Image([self.base, make_layer({"arch": b"arm64\n"})], architecture="arm64", media_type=oci)
        self.armv7 = Image([make_layer({"arch": b"armv7\n"})], architecture="arm", variant="v7", media_type=oci)
        self.attestation = Image([make_layer({"sbom.json": b"{}"})], architecture="unknown", os="unknown", media_type=oci)
        self.multi = Index([self.amd64, self.arm64, self.armv7], attestations=[(self.attestation, self.arm64)])
        self.arm_only = Index([self.arm64])
        pusher.image("team/app", "1", self.app)
        pusher.image("team/worker", "1", self.worker)
        pusher.image("team/oci", "1", self.oci)
        pusher.index("team/multi", "1", self.multi)
        pusher.index("team/armonly", "1", self.arm_only)


@pytest.fixture(scope="session")
def corpus(registry):
    return Corpus(Pusher(registry.url))


@pytest.fixture(scope="session")
def big_image(registry):
    """An image with a 64 MiB incompressible layer, for resume and memory checks."""
    image = Image([random_layer(64 * 1024 * 1024, "big")])
    Pusher(registry.url).image("team/big", "1", image)
    return image


@pytest.fixture
def proxy(registry):
    server = FaultProxy(registry.url).start()
    yield server
    server.stop()


@pytest.fixture
def mirror(registry, tmp_path):
    """A pull-through cache of the registry, and its seed endpoint: a writable registry on the same storage."""
    storage = str(tmp_path / "mirror-storage")
    server = RegistryServer(str(tmp_path / "mirror"), proxy={"remoteurl": registry.url}, storage=storage).start()
    server.seed = RegistryServer(str(tmp_path / "seed"), storage=storage).start()
    yield server
    server.seed.stop()
    server.stop()


@pytest.fixture
def store(tmp_path):
    return str(tmp_path / "store")


@pytest.fixture(scope="session")
def test_ca():
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(test_ca, tmp_path_factory):
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    test_ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="session")
def tls_registry(tmp_path_factory, test_ca, ca_file, corpus):
    """The registry over TLS (a test CA) with htpasswd Basic auth, holding team/app:1."""
    work = tmp_path_factory.mktemp("tls-registry")
    cert = test_ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(work / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(work / "cert.pem"))
    (work / "htpasswd").write_bytes(USER.encode() + b":" + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)) + b"\n")
    server = RegistryServer(
        str(work / "registry"),
        auth={"htpasswd": {"realm": "dockyard-test", "path": str(work / "htpasswd")}},
        tls=(str(work / "cert.pem"), str(work / "key.pem")),
    ).start(ca_path=ca_file)
    session = requests.Session()
    session.auth, session.verify, session.trust_env = (USER, PASSWORD), ca_file, False
    Pusher(server.url, session).image("team/app", "1", corpus.app)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory, test_ca, ca_file, corpus):
    """The registry in `auth: token` mode with a test token service; team/public is anonymous."""
    issuer = TokenIssuer(test_ca, {USER: PASSWORD}, public=("team/public",)).start()
    work = tmp_path_factory.mktemp("token-registry")
    auth = {"token": {"realm": issuer.realm, "service": SERVICE, "issuer": ISSUER, "rootcertbundle": ca_file}}
    server = RegistryServer(str(work), auth=auth).start()
    session = requests.Session()
    token = requests.get(
        issuer.realm, params={"service": SERVICE, "scope": ["repository:team/app:push,pull", "repository:team/public:push,pull"]}, auth=(USER, PASSWORD)
    ).json()["token"]
    session.headers["Authorization"] = f"Bearer {token}"
    Pusher(server.url, session).image("team/app", "1", corpus.app)
    Pusher(server.url, session).image("team/public", "1", corpus.worker)
    server.issuer = issuer
    yield server
    server.stop()
    issuer.stop()


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory):
    engine = DockerEngine(str(tmp_path_factory.mktemp("docker"))).start()
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def podman_engine(tmp_path_factory, registry, tls_registry, token_registry):
    engine = PodmanService(str(tmp_path_factory.mktemp("podman")), [registry.host, tls_registry.host, token_registry.host]).start()
    yield engine
    engine.stop()


@pytest.fixture(params=["docker", "podman"])
def engine(request):
    """Each real engine in turn, emptied before the test."""
    found = request.getfixturevalue(f"{request.param}_engine")
    found.remove_all_images()
    found.kind = request.param
    return found


@pytest.fixture(scope="session")
def containerd_service(tmp_path_factory):
    """Debian's containerd with its own root, state directory, socket and config."""
    service = ContainerdService(str(tmp_path_factory.mktemp("containerd"))).start()
    yield service
    service.stop()
