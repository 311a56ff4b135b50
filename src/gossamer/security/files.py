"""Files that hold keys: private folders (0700) and atomic writes with the mode set first."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def make_private_directory(directory: Path) -> None:
    """Create `directory` (and parents) with mode 0700; an existing one is left as it is."""
    try:
        directory.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        if not directory.is_dir():
            raise
        return
    # mkdir's mode passes through the umask; make sure no group or other bit survived it.
    directory.chmod(0o700)


def write_file_atomically(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` with `data` in one step, so readers see the old file or the new one.

    The temporary file is created 0600 by mkstemp and only then given `mode`, so a private
    key is never readable by others, not even for an instant.
    """
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    staged = Path(temporary)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        staged.chmod(mode)
        staged.replace(path)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    # Without this a power cut can lose the rename, e.g. a new CA key that certificates
    # were already issued from.
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):
            os.fsync(descriptor)
    finally:
        os.close(descriptor)
