"""CORS as Envoy's filter answers it: preflights answered by the proxy, allowed origins echoed.

A route's policy is compiled once per snapshot into a `CompiledCors`: the origin tests, and the
header lines every answer shares, already encoded. Per request the proxy looks for `Origin`
(and, for OPTIONS, `Access-Control-Request-Method`) in the header list, tests the origin, and
either answers a preflight itself or remembers the origin, which the response then echoes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from gossamer.snapshot import Cors

ORIGIN: Final = b"origin"
REQUEST_METHOD: Final = b"access-control-request-method"
REQUEST_HEADERS: Final = b"access-control-request-headers"
ALLOW_ORIGIN: Final = b"access-control-allow-origin"
ALLOW_CREDENTIALS: Final = b"access-control-allow-credentials"
ALLOW_METHODS: Final = b"access-control-allow-methods"
ALLOW_HEADERS: Final = b"access-control-allow-headers"
EXPOSE_HEADERS: Final = b"access-control-expose-headers"
MAX_AGE: Final = b"access-control-max-age"
# The answer names the request's origin, so caches must keep one answer per origin.
VARY_ORIGIN: Final = (b"vary", b"Origin")

Fields = list[tuple[bytes, bytes]]


def header_value(headers: Fields, name: bytes) -> bytes:
    """The first value of a request header (names are lowercase), or b"" when absent."""
    for pair in headers:
        if pair[0] == name:
            return pair[1]
    return b""


class CompiledCors:
    """One route's CORS policy, ready to test origins and to write its headers."""

    __slots__ = (
        "allow_any",
        "echo_headers",
        "echo_methods",
        "forward_unmatched",
        "origins",
        "preflight_fields",
        "replaced",
        "response_fields",
    )

    def __init__(self, cors: Cors, origins: tuple[Callable[[str], bool], ...]) -> None:
        """`origins`: a test for each of `cors.allow_origins`, in order."""
        self.origins = origins
        # As Envoy: a match that takes the string "*" itself lets every origin in.
        self.allow_any = any(test("*") for test in origins)
        self.forward_unmatched = cors.unmatched_preflights == "FORWARD"
        methods = ",".join(cors.allow_methods)
        headers = ",".join(cors.allow_headers)
        self.echo_methods = methods == "*"
        """A lone `*`: a preflight is allowed the method it asks for."""
        self.echo_headers = headers == "*"
        """A lone `*`: a preflight is allowed the headers it asks for."""
        credentials = [(ALLOW_CREDENTIALS, b"true")] if cors.allow_credentials else []
        preflight = [*credentials]
        if methods and not self.echo_methods:
            preflight.append((ALLOW_METHODS, methods.encode("latin-1")))
        if headers and not self.echo_headers:
            preflight.append((ALLOW_HEADERS, headers.encode("latin-1")))
        if cors.max_age is not None:
            preflight.append((MAX_AGE, str(cors.max_age).encode()))
        preflight.append(VARY_ORIGIN)
        self.preflight_fields = tuple(preflight)
        """What a preflight's answer says after its Access-Control-Allow-Origin."""
        response = [*credentials]
        if cors.expose_headers:
            response.append((EXPOSE_HEADERS, ",".join(cors.expose_headers).encode("latin-1")))
        self.replaced = frozenset([ALLOW_ORIGIN] + [name for name, _ in response])
        """Headers the proxy sets on a response, in place of any the upstream sent."""
        response.append(VARY_ORIGIN)
        self.response_fields = tuple(response)
        """What any other response to an allowed origin gets after its Allow-Origin."""

    def allows(self, origin: bytes) -> bool:
        """Whether a request's Origin is one the policy lets in."""
        if self.allow_any:
            return True
        text = origin.decode("latin-1")
        return any(test(text) for test in self.origins)

    def preflight(self, origin: bytes, headers: Fields, method: bytes) -> Fields:
        """The headers of the proxy's answer to a preflight from an allowed origin."""
        fields = [(ALLOW_ORIGIN, origin)]
        fields.extend(self.preflight_fields)
        if self.echo_methods:
            fields.append((ALLOW_METHODS, method))
        if self.echo_headers:
            requested = header_value(headers, REQUEST_HEADERS)
            if requested:
                fields.append((ALLOW_HEADERS, requested))
        return fields

    def respond(self, fields: Fields, origin: bytes) -> Fields:
        """A response's headers for an allowed origin: the origin echoed (never `*`, so that
        credentials work), credentials and exposed headers as configured, `Vary: Origin`."""
        replaced = self.replaced
        out = [pair for pair in fields if pair[0].lower() not in replaced]
        out.append((ALLOW_ORIGIN, origin))
        out.extend(self.response_fields)
        return out
