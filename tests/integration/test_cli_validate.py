"""The real `gossamer` command, run as a user runs it: output, exit codes, never a traceback."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gossamer import __version__
from gossamer.cli.app import app

REPO = Path(__file__).resolve().parents[2]
GOSSAMER = Path(sys.executable).parent / "gossamer"

BROKEN_ROUTE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 20
    - destination: {host: reviews, subst: v2}
      weight: 80
"""


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(GOSSAMER), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert "Traceback" not in result.stderr + result.stdout
    return result


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"gossamer {__version__}"


def test_every_command_has_help() -> None:
    names = [
        command.name or command.callback.__name__
        for command in app.registered_commands
        if command.callback is not None
    ]
    assert "validate" in names
    for name in [None, *names]:
        result = run(*([name] if name else []), "--help")
        assert result.returncode == 0, result.stderr
        assert "Usage: gossamer" in result.stdout


def test_valid_manifests_exit_zero_and_list_what_was_found() -> None:
    result = run("validate", "-f", "examples/assets", "--list")
    assert result.returncode == 0, result.stdout
    assert "Ingress                greencompute/assetmanagement" in result.stdout
    assert "examples/assets/ingress.yaml:2" in result.stdout
    assert result.stdout.rstrip().endswith("ok: 37 resources in 9 files: valid")


def test_invalid_manifests_exit_one_with_one_line_per_problem(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text(BROKEN_ROUTE)
    result = run("validate", "-f", "routes.yaml", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "routes.yaml:11: VirtualService reviews: spec.http[0].route[1].destination.subst: "
        "unknown field (did you mean subset?)"
    )
    assert lines[-1] == "invalid: 0 resources in 1 file: 1 error"


def test_json_output_is_machine_readable(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text(BROKEN_ROUTE)
    result = run("validate", "-f", "routes.yaml", "-o", "json", cwd=tmp_path)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False
    (problem,) = report["problems"]
    assert problem == {
        "file": "routes.yaml",
        "line": 11,
        "severity": "error",
        "code": "extra_forbidden",
        "kind": "VirtualService",
        "name": "reviews",
        "path": "spec.http[0].route[1].destination.subst",
        "message": "unknown field (did you mean subset?)",
    }


def test_strict_fails_on_fields_not_enforced_yet() -> None:
    relaxed = run("validate", "-f", "examples/assets/traffic.yaml")
    strict = run("validate", "-f", "examples/assets/traffic.yaml", "--strict")
    assert relaxed.returncode == 0
    assert strict.returncode == 1
    lines = strict.stdout.splitlines()
    assert (
        "examples/assets/traffic.yaml:17: notice: DestinationRule asset-mgr-ms: "
        "spec.trafficPolicy.outlierDetection.interval: accepted, not enforced yet" in lines
    )
    # What the runtime acts on is not listed.
    assert not any("spec.hosts" in line for line in lines), lines


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("validate", "-f", "no/such/path"), "does not exist"),
        (("validate",), "Missing option"),
        (("validate", "-f", "examples", "-o", "xml"), "Invalid value"),
        (("no-such-command",), "No such command"),
    ],
)
def test_usage_errors_exit_two(args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr


def test_a_folder_without_manifests_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("nothing here")
    result = run("validate", "-f", str(tmp_path))
    assert result.returncode == 2
    assert "no manifest files (.yaml, .yml, .json)" in result.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\xff\xfe\x00garbage", "bad.yaml:1: cannot read file"),
        (b"apiVersion: v1\nkind: Service\nmetadata: {name: a\n", "bad.yaml:3: YAML syntax error"),
        (b"just a string\n", "bad.yaml:1: a manifest must be a mapping"),
        (b"[1, 2, {", "bad.yaml:1: YAML syntax error"),
    ],
)
def test_garbage_is_reported_not_raised(tmp_path: Path, content: bytes, expected: str) -> None:
    (tmp_path / "bad.yaml").write_bytes(content)
    result = run("validate", "-f", "bad.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.startswith(expected)


def test_python_dash_m_runs_the_same_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gossamer", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout.strip() == f"gossamer {__version__}"


def test_a_key_file_that_is_missing_is_named_at_its_line(tmp_path: Path) -> None:
    manifest = tmp_path / "product.yaml"
    manifest.write_text(
        "apiVersion: gossamer.dev/v1alpha1\n"
        "kind: ApiProduct\n"
        "metadata: {name: records}\n"
        "spec:\n"
        "  routes: [{uri: {prefix: /records}}]\n"
        "  plans: [{name: basic}]\n"
        "  consumers:\n"
        "    - name: acme\n"
        "      plan: basic\n"
        "      keys:\n"
        "        - fromFile: keys/acme.key\n",
        encoding="utf-8",
    )
    missing = run("validate", "-f", str(tmp_path))
    assert missing.returncode == 1
    assert f"{manifest}:11:" in missing.stdout, missing.stdout
    assert "cannot read the key file" in missing.stdout
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "acme.key").write_text("acme-key\n", encoding="utf-8")
    assert run("validate", "-f", str(tmp_path)).returncode == 0
