"""API keys a manifest names by file (ApiProduct `keys[].fromFile`): read from beside the manifest
when the files are loaded, and replaced by their SHA-256, so that what `up` and `apply` send on
holds no key in clear text."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gossamer.resources.kinds.gossamer_kinds import ApiProduct
from gossamer.resources.problems import Problem

if TYPE_CHECKING:
    from gossamer.resources.loader import LoadedResource

MAX_KEY_BYTES = 256
"""The longest key a gateway accepts (proxy/apiproduct.py refuses longer ones as malformed)."""


def read_key_files(loaded: LoadedResource) -> tuple[LoadedResource, list[Problem]]:
    """An ApiProduct with each key given by file replaced by the file's key's SHA-256; the
    resource unchanged, and a problem per file, when a file cannot be read or holds no key."""
    resource = loaded.resource
    if not isinstance(resource, ApiProduct):
        return loaded, []
    data: Any = copy.deepcopy(loaded.document.data)
    folder = Path(loaded.document.file).parent
    problems: list[Problem] = []
    replaced = False
    for c, consumer in enumerate(resource.spec.consumers):
        for k, key in enumerate(consumer.keys):
            if key.from_file is None or key.sha256 is not None:
                continue
            digest, message = _digest(folder / key.from_file)
            if message:
                path = ("spec", "consumers", c, "keys", k, "fromFile")
                problems.append(loaded.problem(path, message, code="key-file"))
                continue
            data["spec"]["consumers"][c]["keys"][k] = {"sha256": digest}
            replaced = True
    if problems or not replaced:
        return loaded, problems
    document = dataclasses.replace(loaded.document, data=data)
    typed = type(resource).model_validate(data)
    return dataclasses.replace(loaded, resource=typed, document=document), []


def _digest(path: Path) -> tuple[str, str]:
    """(SHA-256 of the key in `path`, "") or ("", why there is none). Whitespace around the key
    (the newline an editor or `echo` leaves) is not part of it."""
    try:
        key = path.read_bytes().strip()
    except OSError as error:
        return "", f"cannot read the key file {path}: {error.strerror or error}"
    if not key:
        return "", f"the key file {path} is empty"
    if len(key) > MAX_KEY_BYTES or not all(0x21 <= byte <= 0x7E for byte in key):
        return "", (
            f"the key in {path} must be 1 to {MAX_KEY_BYTES} printable ASCII characters "
            "without spaces (gateways refuse other keys)"
        )
    return hashlib.sha256(key).hexdigest(), ""
