"""The bearer-token check in front of every route: no token 401, a token nobody issued 403.
Paths the app declares public (the dashboard's page) pass without one.

It authenticates only; each handler then asks the principal whether it may do what the request
does (`authorize`), since only the handler knows the resource, namespace and name.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gossamer.control.api.status import ApiError
from gossamer.control.auth import Access, Principal, TokenRegistry

PRINCIPAL = "gossamer.principal"
"""The ASGI scope key that carries the authenticated principal to handlers."""

_CHALLENGE = 'Bearer realm="gossamer"'


class BearerAuthentication:
    """ASGI middleware: requires `Authorization: Bearer TOKEN` on every HTTP request but those
    to a path that `public` accepts (their handlers get no principal)."""

    def __init__(
        self,
        app: ASGIApp,
        tokens: TokenRegistry,
        public: Callable[[str], bool] = lambda path: False,
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.public(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            scope[PRINCIPAL] = self.authenticate(Headers(scope=scope).get("authorization"))
        except ApiError as error:
            await error.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def authenticate(self, header: str | None) -> Principal:
        """The principal of an `Authorization` header; ApiError 401 or 403 otherwise."""
        if not header:
            raise ApiError(
                401,
                "Unauthorized",
                "a bearer token is required: send `Authorization: Bearer TOKEN`",
                headers={"WWW-Authenticate": _CHALLENGE},
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401,
                "Unauthorized",
                "the Authorization header must be `Bearer TOKEN`",
                headers={"WWW-Authenticate": f'{_CHALLENGE}, error="invalid_request"'},
            )
        principal = self.tokens.authenticate(token.strip())
        if principal is None:
            raise ApiError(403, "Forbidden", "the bearer token is not valid here")
        return principal


def authorize(request: Request, access: Access) -> Principal:
    """The request's principal, or 403 if it may not do `access`."""
    principal: Principal = request.scope[PRINCIPAL]
    if not principal.allows(access):
        where = f' in the namespace "{access.namespace}"' if access.namespace else ""
        what = f'{access.plural} "{access.name}"' if access.name else access.plural
        raise ApiError(
            403,
            "Forbidden",
            f"{principal.name} cannot {access.verb.value} {what}{where}",
            {"kind": access.plural, "group": access.group, "name": access.name or ""},
        )
    return principal
