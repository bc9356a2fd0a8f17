"""A minimal OpenID Connect provider for tests: the authorization-code flow (with PKCE) on 127.0.0.1, in a thread.

It approves every sign-in at once and vouches for `provider.identity` (the test sets it before the browser goes
there): no login form, no consent. What it checks is what a real provider checks, so a client that gets the flow
wrong fails here too: the client's id and secret (HTTP Basic or form), the registered redirect_uri, a code used
once and by the client it was issued to, and the PKCE verifier. ID tokens are RS256 JWTs (joserfc, which Authlib
itself uses) with iss, aud, sub, nonce, iat, exp and at_hash, verified by the client against `/jwks`.

    /.well-known/openid-configuration   discovery
    /authorize                          GET: redirects to redirect_uri?code=...&state=...
    /token                              POST: id_token, access_token
    /jwks                               the public key
    /userinfo                           the identity (Bearer access_token)
    /logout                             RP-initiated logout: redirects to post_logout_redirect_uri

Never for production: it signs in whoever asks."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import RSAKey


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    nonce: str | None
    claims: dict[str, Any]
    code_challenge: str | None
    code_challenge_method: str | None


@dataclass
class OIDCProvider:
    """Start with `start()`; `issuer` is its base URL. One registered client."""

    client_id: str
    client_secret: str
    redirect_uris: list[str]
    identity: dict[str, Any] = field(default_factory=dict)  # the claims the next sign-in vouches for
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "test-key-1"}))
    log: list[str] = field(default_factory=list)  # "GET /authorize", ...: what was asked, in order
    logouts: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # requests it refused, and why
    _codes: dict[str, Grant] = field(default_factory=dict)
    _tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def issuer(self) -> str:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def metadata_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def metadata(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "end_session_endpoint": f"{self.issuer}/logout",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "email", "email_verified", "name"],
        }

    def start(self) -> OIDCProvider:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet: the test reads `log`
                pass

            def do_GET(self) -> None:
                provider._handle(self, "GET")

            def do_POST(self) -> None:
                provider._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="test-oidc-provider", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # --- requests ---------------------------------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(request.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        form: dict[str, str] = {}
        if method == "POST":
            length = int(request.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(request.rfile.read(length).decode()).items()}
        with self._lock:
            self.log.append(f"{method} {url.path}")
        routes = {
            ("GET", "/.well-known/openid-configuration"): lambda: self._json(request, self.metadata()),
            ("GET", "/jwks"): lambda: self._json(request, {"keys": [self.key.as_dict(private=False)]}),
            ("GET", "/authorize"): lambda: self._authorize(request, query),
            ("POST", "/token"): lambda: self._token(request, form),
            ("GET", "/userinfo"): lambda: self._userinfo(request),
            ("GET", "/logout"): lambda: self._logout(request, query),
        }
        route = routes.get((method, url.path))
        if route is None:
            self._json(request, {"error": "not_found"}, 404)
        else:
            route()

    def _refuse(
        self, request: BaseHTTPRequestHandler, why: str, status: int = 400, error: str = "invalid_request"
    ) -> None:
        with self._lock:
            self.errors.append(why)
        self._json(request, {"error": error, "error_description": why}, status)

    def _authorize(self, request: BaseHTTPRequestHandler, query: dict[str, str]) -> None:
        redirect_uri = query.get("redirect_uri", "")
        if query.get("client_id") != self.client_id:
            return self._refuse(request, f"unknown client_id {query.get('client_id')!r}", error="unauthorized_client")
        if redirect_uri not in self.redirect_uris:
            return self._refuse(request, f"redirect_uri {redirect_uri!r} is not registered")
        if query.get("response_type") != "code":
            return self._refuse(request, f"response_type {query.get('response_type')!r}")
        if "openid" not in query.get("scope", "").split():
            return self._refuse(request, f"scope {query.get('scope')!r} lacks openid")
        if query.get("code_challenge") and query.get("code_challenge_method", "plain") != "S256":
            return self._refuse(request, "only S256 PKCE")
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._codes[code] = Grant(
                self.client_id, redirect_uri, query.get("nonce"), dict(self.identity), query.get("code_challenge"),
                query.get("code_challenge_method"),
            )  # fmt: skip
        back = {"code": code, **({"state": query["state"]} if "state" in query else {})}
        self._redirect(request, f"{redirect_uri}?{urlencode(back)}")

    def _client(self, request: BaseHTTPRequestHandler, form: dict[str, str]) -> tuple[str, str] | None:
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            return unquote(user), unquote(password)
        if "client_id" in form and "client_secret" in form:
            return form["client_id"], form["client_secret"]
        return None

    def _token(self, request: BaseHTTPRequestHandler, form: dict[str, str]) -> None:
        client = self._client(request, form)
        if client != (self.client_id, self.client_secret):
            return self._refuse(request, "wrong client credentials", 401, "invalid_client")
        if form.get("grant_type") != "authorization_code":
            return self._refuse(request, f"grant_type {form.get('grant_type')!r}", error="unsupported_grant_type")
        with self._lock:
            grant = self._codes.pop(form.get("code", ""), None)  # once only
        if grant is None or grant.client_id != client[0]:
            return self._refuse(request, "unknown or used code", error="invalid_grant")
        if form.get("redirect_uri") != grant.redirect_uri:
            return self._refuse(request, "redirect_uri differs from the authorization request", error="invalid_grant")
        if grant.code_challenge is not None:
            verifier = form.get("code_verifier", "")
            if _b64url(hashlib.sha256(verifier.encode()).digest()) != grant.code_challenge:
                return self._refuse(request, "PKCE verifier does not match", error="invalid_grant")
        access_token = secrets.token_urlsafe(32)
        now = int(time.time())
        claims = {
            "iss": self.issuer, "aud": self.client_id, "iat": now, "exp": now + 600, "auth_time": now,
            "at_hash": _b64url(hashlib.sha256(access_token.encode()).digest()[:16]),
            **({"nonce": grant.nonce} if grant.nonce else {}),
            **grant.claims,
        }  # fmt: skip
        claims.setdefault("sub", f"sub-{claims.get('email', 'nobody')}")
        id_token = jwt.encode({"alg": "RS256", "kid": self.key.kid}, claims, self.key)
        with self._lock:
            self._tokens[access_token] = grant.claims
        body = {"access_token": access_token, "token_type": "Bearer", "expires_in": 600, "id_token": id_token,
                "scope": "openid email profile"}  # fmt: skip
        self._json(request, body, headers={"Cache-Control": "no-store"})

    def _userinfo(self, request: BaseHTTPRequestHandler) -> None:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        with self._lock:
            claims = self._tokens.get(token)
        if claims is None:
            return self._refuse(request, "unknown access token", 401, "invalid_token")
        self._json(request, {"sub": f"sub-{claims.get('email', 'nobody')}", **claims})

    def _logout(self, request: BaseHTTPRequestHandler, query: dict[str, str]) -> None:
        with self._lock:
            self.logouts.append(query)
        target = query.get("post_logout_redirect_uri")
        if target and target in self.redirect_uris:
            state = {"state": query["state"]} if "state" in query else {}
            self._redirect(request, f"{target}?{urlencode(state)}" if state else target)
        else:
            self._json(request, {"signed_out": True})

    # --- responses --------------------------------------------------------------------------------------------

    @staticmethod
    def _json(
        request: BaseHTTPRequestHandler, body: Any, status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(data)

    @staticmethod
    def _redirect(request: BaseHTTPRequestHandler, location: str) -> None:
        request.send_response(302)
        request.send_header("Location", location)
        request.send_header("Content-Length", "0")
        request.end_headers()
