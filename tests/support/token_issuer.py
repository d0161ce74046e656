"""A small token service for the registry's `auth: token` mode: it checks Basic credentials,
grants scopes by a policy, and signs JWTs with a certificate the registry trusts (x5c chain)."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from support.registry import free_port

SERVICE = "dockyard-test-registry"
ISSUER = "dockyard-test-issuer"


class TokenIssuer:
    """`users` maps user → password; `public` lists repositories anonymous users may pull."""

    def __init__(self, ca, users: dict, public: tuple = ()):
        self.users = users
        self.public = public
        self.port = free_port()
        self.realm = f"http://127.0.0.1:{self.port}/token"
        leaf = ca.issue_cert("token-signer.test")
        self._key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
        chain = [x509.load_pem_x509_certificate(blob.bytes()) for blob in leaf.cert_chain_pems]
        self._x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode() for cert in chain]
        self.requests = []  # (user or None, scopes)
        self.issued = []  # every token handed out, in order; read it through issued_tokens()
        self._lock = threading.Lock()
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                issuer._answer(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True

    def start(self) -> TokenIssuer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def issued_tokens(self) -> list:
        """A copy of every token issued so far, oldest first (for scans that look for leaked tokens)."""
        with self._lock:
            return list(self.issued)

    def _answer(self, handler) -> None:
        query = parse_qs(urlsplit(handler.path).query)
        scopes = query.get("scope", [])
        user = None
        header = handler.headers.get("Authorization", "")
        if header.startswith("Basic "):
            name, _sep, password = base64.b64decode(header[6:]).decode().partition(":")
            if self.users.get(name) != password:
                return self._send(handler, 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
            user = name
        with self._lock:
            self.requests.append((user, scopes))
        access = [grant for grant in map(lambda scope: self._grant(user, scope), scopes) if grant]
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": user or "", "aud": SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        token = jwt.encode(claims, self._key, algorithm="ES256", headers={"x5c": self._x5c})
        with self._lock:
            self.issued.append(token)
        self._send(handler, 200, {"token": token, "expires_in": 300, "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))})

    def _grant(self, user, scope: str):
        kind, rest = scope.split(":", 1)
        name, _sep, actions = rest.rpartition(":")
        allowed = user is not None or (kind == "repository" and name in self.public)
        if not allowed:
            return None
        granted = ("pull", "push", "*") if user is not None else ("pull",)
        return {"type": kind, "name": name, "actions": [a for a in actions.split(",") if a in granted]}

    @staticmethod
    def _send(handler, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
