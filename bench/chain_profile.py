"""Where a proxy's CPU goes, from py-spy's collapsed stacks (`--native --format raw`).

Usage: python bench/chain_profile.py DIR [DIR ...]   (each with gateway.txt and sidecar.txt,
                                                    as bench/chain_bench.py --profile writes)

Samples whose leaf is the event loop's epoll wait are idle and left out; every other sample goes
to exactly one cost, the first of these that fits its stack:

1. mTLS handshakes: a frame of `do_handshake` (the mesh's connections, and the span exporter's
   to an https receiver);
2. span export: a frame of the exporter (`SpanExporter`, `post`, `zipkin_body`, `otlp_body`);
3. admin and agent: the admin endpoint (scrapes) and the control-plane stream;
4. TLS records: OpenSSL encrypting or decrypting (`SSL_read*`, `SSL_write*`);
5. spans: making a span and its tags on the request path (`tracing` module frames);
6. metrics: the `stats` module (Istio's series);
7. system calls: a leaf that is a system call (loopback TCP read, write, connect, close);
8. HTTP parsing: a leaf in llhttp (httptools);
then, by the deepest frame that names one: the proxy's own Python (routing, headers, the
exchange, pools, timers), the TLS glue (uvloop's SSLProtocol around OpenSSL's buffers), the
httptools glue (its callbacks), and the event loop and interpreter (uvloop, refcounts, malloc).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

IDLE = ("epoll_wait", "epoll_pwait", "epoll_pwait2")
SYSCALLS = frozenset(
    {"write", "writev", "read", "readv", "recv", "recvfrom", "send", "sendto", "sendmsg",
     "recvmsg", "connect", "close", "accept4", "shutdown", "getsockopt", "setsockopt",
     "__libc_write", "__libc_read", "__libc_connect", "__close", "syscall"}
)  # fmt: skip
STACK_WIDE = (
    ("mTLS handshakes", ("do_handshake",)),
    ("span export", ("SpanExporter", "span_export", "zipkin_body", "otlp_body")),
    ("admin and agent", ("AdminServer", "_AdminConnection", "admin.py", "ControlPlaneAgent")),
    ("TLS records (OpenSSL)", ("SSL_read", "SSL_write")),
    ("spans on the request path", ("tracing___", "tracing.py", "span_tags")),
    ("metrics", ("stats___", "stats.py")),
)
OWNERS = (
    ("the proxy's own Python", ("CPyDef_", "CPyPy_", "CPyL_", "gossamer/")),
    ("TLS glue (uvloop SSLProtocol)", ("SSLProtocol", "sslproto")),
    ("httptools glue", ("HttpParser", "parser_cb")),
)


def classify(frames: list[str]) -> str | None:
    """The cost a sample's stack goes to (root first), or None when it is idle."""
    leaf = frames[-1].split(" (", 1)[0]
    if leaf in IDLE:
        return None
    for name, marks in STACK_WIDE:
        if any(mark in frame for frame in frames for mark in marks):
            return name
    if leaf in SYSCALLS:
        return "system calls"
    if leaf.startswith("llhttp"):
        return "HTTP parsing (llhttp)"
    # Below the event loop's run: the runner's own frames above it own every sample.
    loop = max((i for i, frame in enumerate(frames) if frame.startswith("uv_run")), default=-1)
    for frame in reversed(frames[loop + 1 :]):
        for name, marks in OWNERS:
            if any(mark in frame for mark in marks):
                return name
    return "event loop and interpreter"


def costs(path: Path) -> tuple[int, Counter[str]]:
    """Busy samples, and how many went to each cost."""
    found: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        cost = classify(stack.split(";"))
        if cost is not None:
            found[cost] += int(count)
    return sum(found.values()), found


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    for folder in map(Path, sys.argv[1:]):
        for name in ("gateway", "sidecar"):
            path = folder / f"{name}.txt"
            if not path.exists():
                continue
            busy, found = costs(path)
            print(f"\n{folder} {name}: {busy} busy samples")
            print("| cost | share of busy samples |")
            print("| --- | ---: |")
            for cost, count in found.most_common():
                print(f"| {cost} | {100 * count / busy:.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
