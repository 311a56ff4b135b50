"""Principals, their rules, token lookup and the admin token file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gossamer.control.auth import (
    ADMIN,
    DASHBOARD_SESSION,
    MESH_GROUP,
    Access,
    Principal,
    Rule,
    TokenFileError,
    TokenRegistry,
    Verb,
    load_admin_token,
)

READ = Access(Verb.GET, "networking.istio.io", "virtualservices", "default", "reviews")


def test_the_admin_may_do_anything() -> None:
    assert ADMIN.allows(READ)
    assert ADMIN.allows(Access(Verb.LIST, "", "services"))


def test_a_rule_covers_only_what_it_names() -> None:
    own = Rule(
        verbs=frozenset({"get", "watch"}),
        groups=frozenset({"networking.istio.io"}),
        plurals=frozenset({"virtualservices"}),
        namespaces=frozenset({"default"}),
        names=frozenset({"reviews"}),
    )
    workload = Principal("reviews", (own,))
    assert workload.allows(READ)
    assert not workload.allows(Access(Verb.DELETE, READ.group, READ.plural, "default", "reviews"))
    assert not workload.allows(Access(Verb.GET, READ.group, READ.plural, "default", "ratings"))
    assert not workload.allows(Access(Verb.GET, READ.group, READ.plural, "prod", "reviews"))
    # Listing every namespace needs a namespace wildcard.
    assert not workload.allows(Access(Verb.WATCH, READ.group, READ.plural, None, None))


def test_tokens_map_to_their_principal() -> None:
    tokens = TokenRegistry()
    tokens.add("secret", ADMIN)
    assert tokens.authenticate("secret") is ADMIN
    assert tokens.authenticate("secreT") is None
    assert tokens.authenticate("") is None


def test_the_admin_token_is_made_once_and_kept_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    token = load_admin_token(state)
    assert len(token) >= 40
    assert stat.S_IMODE((state / "admin-token").stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert load_admin_token(state) == token


def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    load_admin_token(tmp_path)
    (tmp_path / "admin-token").chmod(0o644)
    with pytest.raises(TokenFileError, match="chmod 600"):
        load_admin_token(tmp_path)


def test_an_expiring_token_stands_for_its_principal_until_it_expires() -> None:
    now = [100.0]
    tokens = TokenRegistry(clock=lambda: now[0])
    tokens.add_expiring("session", DASHBOARD_SESSION, 60)
    assert tokens.authenticate("session") is DASHBOARD_SESSION
    assert tokens.expiring() == 1
    now[0] += 60
    assert tokens.authenticate("session") is None
    assert tokens.expiring() == 0


def test_a_dashboard_session_reads_and_cannot_write_tap_or_stream() -> None:
    read = Access(Verb.LIST, "networking.istio.io", "virtualservices", "default")
    assert DASHBOARD_SESSION.allows(read)
    assert DASHBOARD_SESSION.allows(Access(Verb.GET, MESH_GROUP, "traces"))
    for verb in (Verb.CREATE, Verb.UPDATE, Verb.PATCH, Verb.DELETE, Verb.WATCH):
        assert not DASHBOARD_SESSION.allows(Access(verb, "", "services", "default", "web"))
