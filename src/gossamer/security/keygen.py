"""Make a workload's key and certificate signing request in a process of their own.

`python -m gossamer.security.keygen --spiffe ID --key FILE` writes a new ECDSA P-256 key to
FILE (mode 0600) and prints a CSR for ID on stdout. A proxy runs it when it needs a certificate
(at start, then at each renewal), so that the proxy process itself never loads `cryptography`,
which would cost it about 16 MB for work done twice a day.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gossamer.security.identity import WorkloadIdentity


def main(argv: list[str]) -> int:
    """Write the key, print the CSR; exit 1 with the reason when that cannot be done."""
    parser = argparse.ArgumentParser(prog="python -m gossamer.security.keygen")
    parser.add_argument("--spiffe", required=True, help="the SPIFFE id to ask for")
    parser.add_argument("--key", required=True, type=Path, help="where the key is written")
    args = parser.parse_args(argv)
    try:
        identity = WorkloadIdentity.create(args.spiffe)
        identity.write_key(args.key)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    sys.stdout.write(identity.csr())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
