"""The arguments the parent of `--workers N` gives each worker."""

from __future__ import annotations

from gossamer.proxy.workers import worker_argv

ARGV = [
    "--bootstrap",
    "b.json",
    "--workers",
    "2",
    "--admin",
    "127.0.0.1:15000",
    "--ready-file",
    "r",
]


def test_worker_0_keeps_the_admin_and_ready_file_given() -> None:
    assert worker_argv(ARGV, 0) == [
        "--bootstrap", "b.json", "--admin", "127.0.0.1:15000", "--ready-file", "r",
    ]  # fmt: skip


def test_other_workers_take_a_free_admin_port_and_a_ready_file_of_their_own() -> None:
    argv = worker_argv([*ARGV[:2], "--workers=3", *ARGV[4:]], 2)
    assert "--workers=3" not in argv
    assert argv[-4:] == ["--admin", "127.0.0.1:0", "--ready-file", "r.2"]
