"""Signals to a whole process group, and whether any live process is left in one.

Every supervised process leads its own group (it is started in a new session), so signalling
the group reaches the grandchildren it spawned too, and no process outlives its supervisor.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

log = logging.getLogger(__name__)

PROC = Path("/proc")


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` (0 only checks) to every process of the group; False when none is left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # Only the group's zombies or processes that changed user are left: nothing to reach.
        log.debug("process group %d: no member may be signalled", pgid)
        return False
    return True


def kill_group(pgid: int) -> None:
    """SIGKILL every process of the group, if any is left."""
    signal_group(pgid, signal.SIGKILL)


def group_alive(pgid: int) -> bool:
    """Whether the group holds a process that is not a zombie.

    A zombie still belongs to its group until its parent reaps it, and orphans are reparented
    to PID 1, which in a container often never reaps; a zombie runs nothing, so it does not
    count. Without /proc (not Linux), any member counts.
    """
    if not signal_group(pgid, 0):
        return False
    if not PROC.is_dir():
        return True
    return any(_is_live_member(entry, pgid) for entry in PROC.iterdir() if entry.name.isdigit())


def _is_live_member(entry: Path, pgid: int) -> bool:
    try:
        stat = (entry / "stat").read_bytes()
    except OSError:  # the process ended while the folder was read
        return False
    # The command name is in parentheses and may hold spaces or parentheses itself.
    fields = stat[stat.rindex(b")") + 2 :].split()
    state, group = fields[0], int(fields[2])
    return group == pgid and state not in (b"Z", b"X")
