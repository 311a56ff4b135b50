"""A proxy speaking TLS keeps read-sized buffers in the heap instead of mapping each one."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent(
    """
    import sys

    def mappings():
        with open("/proc/self/maps") as maps:
            return {line.split()[0] for line in maps}

    if sys.argv[1] == "tuned":
        from gossamer.proxy.memory import keep_tls_buffers_on_heap

        assert keep_tls_buffers_on_heap()
    before = mappings()
    buffer = bytearray(256 * 1024)  # what each TLS read asks for
    print(len(mappings() - before))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mmap threshold")
def test_a_tls_read_buffer_no_longer_gets_a_mapping_of_its_own() -> None:
    def new_mappings(mode: str) -> int:
        done = subprocess.run(
            [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
        )
        return int(done.stdout)

    assert new_mappings("default") == 1  # glibc maps a block this large on its own
    assert new_mappings("tuned") == 0
