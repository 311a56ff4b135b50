"""The key maker a proxy runs: a 0600 key on disk, a CSR on stdout, nothing else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

SPIFFE = "spiffe://cluster.local/ns/default/sa/reviews"


def keygen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gossamer.security.keygen", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_it_writes_a_private_key_and_prints_a_csr_for_that_key(tmp_path: Path) -> None:
    key_file = tmp_path / "identity" / "key-1.pem"
    result = keygen("--spiffe", SPIFFE, "--key", str(key_file))
    assert result.returncode == 0, result.stderr
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.parent.stat().st_mode & 0o777 == 0o700
    assert "PRIVATE KEY" not in result.stdout
    csr = x509.load_pem_x509_csr(result.stdout.encode())
    assert csr.is_signature_valid
    names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.UniformResourceIdentifier) == [SPIFFE]
    key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    assert key.public_key() == csr.public_key()


def test_a_bad_spiffe_id_is_refused_with_a_reason_and_no_key(tmp_path: Path) -> None:
    key_file = tmp_path / "key.pem"
    result = keygen("--spiffe", "reviews", "--key", str(key_file))
    assert result.returncode == 1
    assert "spiffe://" in result.stderr
    assert not key_file.exists()
