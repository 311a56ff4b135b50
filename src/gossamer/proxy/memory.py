"""Allocator settings for a proxy that speaks TLS.

Every TLS read asks the ssl module for a buffer of 256 KiB (uvloop reads records with
`SSLObject.read(256 KiB)` and the ssl module allocates that much before knowing how much it
will get). glibc serves blocks that large with a fresh mmap and returns them with munmap, so
each read costs several system calls and a page fault. Raising glibc's mmap threshold keeps
such blocks in the heap, where they are reused; the trim threshold keeps the heap from being
shrunk and regrown on every request.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 20
TRIM_THRESHOLD = 4 << 20

_done = False


def keep_tls_buffers_on_heap() -> bool:
    """Set glibc's thresholds once per process; False where there is no glibc to tell."""
    global _done  # noqa: PLW0603 - a process-wide setting, made once
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    import ctypes  # noqa: PLC0415 - only proxies that speak TLS need it

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl has no mallopt): nothing to tune
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    if not _done:
        log.debug("mallopt refused the TLS buffer thresholds")
    return _done
