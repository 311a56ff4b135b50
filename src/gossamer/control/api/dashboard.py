"""The dashboard's routes: its page (served without a token; it shows nothing until one is
given), one-time login links, and the list of kinds its config view reads.

- `GET /dashboard/` and its files: public, with a Content-Security-Policy that lets the page
  load nothing but itself.
- `POST /dashboard/v1/logins`: the admin mints a one-time login code (`gossamer dashboard`).
- `POST /dashboard/login` `{"code": CODE}`: public; a valid code, once and within its lifetime,
  becomes a read-only session token that expires.
- `GET /dashboard/v1/kinds`: the served kinds, one version each, as `gossamer get` reads them.
- `GET /dashboard/v1/whoami`: whom the token stands for, and whether it may read what the page
  shows (how the login form tells a token that reads nothing from a good one).
"""

from __future__ import annotations

import hmac
import importlib.resources
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from gossamer.cli.resource_names import preferred_resources
from gossamer.control.api.catalog import Catalog
from gossamer.control.api.guard import PRINCIPAL, authorize
from gossamer.control.api.status import ApiError
from gossamer.control.auth import (
    DASHBOARD_LOGINS,
    DASHBOARD_SESSION,
    MESH_GROUP,
    Access,
    Principal,
    TokenRegistry,
    Verb,
)

PREFIX = "/dashboard"
API_PREFIX = "/dashboard/v1/"
LOGIN_PATH = "/dashboard/login"

FILES = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "graph.js": "text/javascript; charset=utf-8",
    "metrics.js": "text/javascript; charset=utf-8",
    "traces.js": "text/javascript; charset=utf-8",
    "config.js": "text/javascript; charset=utf-8",
}
"""The page's files, and nothing else: a name not listed is a 404."""

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}
"""No script but the page's own, no framing, no referrer: the page holds a bearer token."""

_MAX_LOGIN_BODY = 1024


def is_public(path: str) -> bool:
    """Whether a path is served without a token: the page and the code exchange."""
    return path == PREFIX or (path.startswith(PREFIX + "/") and not path.startswith(API_PREFIX))


@dataclass(frozen=True, slots=True)
class DashboardSettings:
    """How long login codes and sessions last, and how many may be held."""

    login_code_s: float = 60.0
    session_s: float = 8 * 3600.0
    max_codes: int = 32
    max_sessions: int = 256


class DashboardEndpoints:
    """Handlers of the dashboard's routes."""

    def __init__(
        self,
        tokens: TokenRegistry,
        catalog: Catalog,
        settings: DashboardSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tokens = tokens
        self.catalog = catalog
        self.settings = settings or DashboardSettings()
        self.clock = clock
        self.codes: dict[str, float] = {}
        """Unused login codes -> when they expire."""

    def __repr__(self) -> str:
        return f"<DashboardEndpoints {len(self.codes)} codes, {self.tokens.expiring()} sessions>"

    def routes(self) -> list[Route]:
        """Where each handler is served."""
        return [
            Route(PREFIX, self.redirect, methods=["GET"]),
            Route(API_PREFIX + "logins", self.mint, methods=["POST"]),
            Route(API_PREFIX + "kinds", self.kinds, methods=["GET"]),
            Route(API_PREFIX + "whoami", self.whoami, methods=["GET"]),
            Route(LOGIN_PATH, self.login, methods=["POST"]),
            Route(PREFIX + "/", self.page, methods=["GET"]),
            Route(PREFIX + "/{file}", self.page, methods=["GET"]),
        ]

    async def redirect(self, request: Request) -> Response:
        """`/dashboard` -> `/dashboard/`, so that the page's relative links resolve."""
        return RedirectResponse(PREFIX + "/", status_code=308)

    async def page(self, request: Request) -> Response:
        """One of the page's files."""
        name = request.path_params.get("file", "index.html")
        media_type = FILES.get(name)
        if media_type is None:
            raise ApiError(404, "NotFound", f"the dashboard has no file {name!r}")
        body = (importlib.resources.files("gossamer.dashboard") / "static" / name).read_bytes()
        return Response(body, media_type=media_type, headers=SECURITY_HEADERS)

    async def mint(self, request: Request) -> Response:
        """A one-time login code, for a link that signs a browser in (`gossamer dashboard`)."""
        authorize(request, Access(Verb.CREATE, MESH_GROUP, DASHBOARD_LOGINS))
        self._expire_codes()
        if len(self.codes) >= self.settings.max_codes:
            raise ApiError(429, "TooManyRequests", "too many unused login codes; try in a minute")
        code = secrets.token_urlsafe(32)
        self.codes[code] = self.clock() + self.settings.login_code_s
        return JSONResponse(
            {
                "code": code,
                "path": f"{PREFIX}/#login={code}",
                "expiresInSeconds": self.settings.login_code_s,
            },
            status_code=201,
        )

    async def login(self, request: Request) -> Response:
        """A login code, once and in time, for a read-only session token that expires."""
        code = _code(await _bounded_body(request))
        self._expire_codes()
        found = next((c for c in self.codes if hmac.compare_digest(c, code)), None)
        if found is None:
            raise ApiError(
                403,
                "Forbidden",
                "this login link is not valid: it was used, it expired, or it is from another "
                "control plane; run `gossamer dashboard` for a new one",
            )
        del self.codes[found]
        if self.tokens.expiring() >= self.settings.max_sessions:
            raise ApiError(429, "TooManyRequests", "too many dashboard sessions are open")
        token = secrets.token_urlsafe(32)
        self.tokens.add_expiring(token, DASHBOARD_SESSION, self.settings.session_s)
        return JSONResponse(
            {
                "token": token,
                "principal": DASHBOARD_SESSION.name,
                "expiresInSeconds": self.settings.session_s,
            },
            headers={"cache-control": "no-store"},
        )

    async def kinds(self, request: Request) -> Response:
        """The served kinds, at the version `gossamer get` reads, with their list paths."""
        authorize(request, Access(Verb.LIST, MESH_GROUP, "kinds"))
        items = [
            {
                "kind": served.kind,
                "group": served.group,
                "version": served.version,
                "plural": served.plural,
                "apiVersion": served.api_version,
                "path": f"{served.base_path}/{served.plural}",
            }
            for served in preferred_resources(self.catalog)
        ]
        return JSONResponse({"kind": "KindList", "items": items})

    async def whoami(self, request: Request) -> Response:
        """The token's principal, and whether it may read telemetry, proxies and objects."""
        principal: Principal = request.scope[PRINCIPAL]
        reads = all(
            principal.allows(Access(Verb.LIST, MESH_GROUP, plural))
            for plural in ("metrics", "traces", "proxies")
        )
        return JSONResponse({"name": principal.name, "readsMesh": reads})

    def _expire_codes(self) -> None:
        now = self.clock()
        for code in [c for c, end in self.codes.items() if end <= now]:
            del self.codes[code]


async def _bounded_body(request: Request) -> bytes:
    """The body, or b"" past `_MAX_LOGIN_BODY`: this route takes no token, so it reads no more
    than a code needs."""
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > _MAX_LOGIN_BODY:
            return b""
        chunks.append(chunk)
    return b"".join(chunks)


def _code(body: bytes) -> str:
    """The code of `{"code": CODE}`, or "" for anything else."""
    try:
        sent = json.loads(body)
    except ValueError:
        return ""
    code = sent.get("code") if isinstance(sent, dict) else None
    return code if isinstance(code, str) else ""
