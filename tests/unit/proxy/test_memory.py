"""A proxy speaking TLS keeps read-sized buffers in the heap instead of mapping each one."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent(
    """
    import ctypes
    import sys

    def region(address):
        # Which mapping holds `address`: "[heap]", or "" for an anonymous one of its own.
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split()
                start, end = (int(bound, 16) for bound in fields[0].split("-"))
                if start <= address < end:
                    return fields[5] if len(fields) > 5 else ""
        return "?"

    if sys.argv[1] == "tuned":
        from gossamer.proxy.memory import keep_tls_buffers_on_heap

        assert keep_tls_buffers_on_heap()
    buffer = bytearray(256 * 1024)  # what each TLS read asks for
    print(region(ctypes.addressof(ctypes.c_char.from_buffer(buffer))) or "own mapping")
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mmap threshold")
def test_a_tls_read_buffer_no_longer_gets_a_mapping_of_its_own() -> None:
    # The buffer's own address says where it went: counting the process's mappings before and
    # after would also count an arena Python's allocator happens to map meanwhile.
    def placed(mode: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    assert placed("default") == "own mapping"  # glibc maps a block this large on its own
    assert placed("tuned") == "[heap]"


TRIM_PROBE = textwrap.dedent(
    """
    def rss():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * 4096

    # Garbage left all through the heap, as starting up leaves it: most blocks freed, every
    # tenth kept, so the heap's top cannot simply be cut off.
    blocks = [bytearray(8192) for _ in range(10_000)]
    kept = blocks[::10]
    del blocks
    before = rss()
    from gossamer.proxy.memory import release_free_memory

    assert release_free_memory()
    print(before - rss())
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_free_memory_scattered_through_the_heap_is_given_back() -> None:
    done = subprocess.run(
        [sys.executable, "-c", TRIM_PROBE], capture_output=True, text=True, check=True
    )
    assert int(done.stdout) > 40_000_000  # of the 73 MB freed
