"""ApiProduct keys given by file: read beside the manifest, sent on as their SHA-256 only."""

from __future__ import annotations

import hashlib
from pathlib import Path

from gossamer.resources import load_paths
from gossamer.resources.kinds.gossamer_kinds import ApiProduct

PRODUCT = """\
apiVersion: gossamer.dev/v1alpha1
kind: ApiProduct
metadata: {name: records}
spec:
  routes: [{uri: {prefix: /records}}]
  plans: [{name: basic}]
  consumers:
    - name: acme
      plan: basic
      keys:
        - sha256: 8676d15d94dabdd1283e6c407e2bb08a7b5c13b4e3667d4795c17172e080a3d4
        - fromFile: keys/acme.key
"""


def write(folder: Path, key: bytes | None) -> Path:
    (folder / "keys").mkdir()
    if key is not None:
        (folder / "keys" / "acme.key").write_bytes(key)
    manifest = folder / "product.yaml"
    manifest.write_text(PRODUCT, encoding="utf-8")
    return manifest


def test_a_key_file_beside_the_manifest_becomes_its_sha256(tmp_path: Path) -> None:
    write(tmp_path, b"acme-secret-key-1\n")
    result = load_paths([tmp_path])
    assert result.problems == []
    [loaded] = result.resources
    digest = hashlib.sha256(b"acme-secret-key-1").hexdigest()
    assert loaded.document.data["spec"]["consumers"][0]["keys"][1] == {"sha256": digest}
    assert isinstance(loaded.resource, ApiProduct)
    keys = loaded.resource.spec.consumers[0].keys
    assert [(key.sha256, key.from_file) for key in keys][1] == (digest, None)
    assert "acme-secret-key-1" not in repr(loaded.document.data)


def test_a_missing_or_unusable_key_file_is_a_problem_at_its_line(tmp_path: Path) -> None:
    for name, key, message in (
        ("missing", None, "cannot read the key file"),
        ("empty", b"\n", "is empty"),
        ("spaced", b"two words\n", "printable ASCII characters without spaces"),
        ("long", b"k" * 257, "1 to 256 printable"),
    ):
        folder = tmp_path / name
        folder.mkdir()
        write(folder, key)
        [problem] = load_paths([folder]).problems
        assert problem.line == 12, problem
        assert problem.path == "spec.consumers[0].keys[1].fromFile", problem
        assert message in problem.message, problem
