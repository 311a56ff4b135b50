"""A proxy on a control plane announces its admin endpoint as bound, for scrape discovery."""

from __future__ import annotations

from gossamer.proxy.agent import AgentOptions
from gossamer.proxy.runner import RunOptions, _announcing_admin
from gossamer.snapshot.protocol import Hello


def agent(address: str = "127.0.0.1") -> AgentOptions:
    return AgentOptions(urls=("https://cp",), token="t", hello=Hello("web", address=address))


def test_the_bound_port_is_announced_not_the_port_asked_for() -> None:
    options = RunOptions(None, "127.0.0.1", 0)
    assert _announcing_admin(agent(), options, 41234).hello.admin == "127.0.0.1:41234"


def test_an_admin_on_every_interface_is_announced_at_the_proxys_address() -> None:
    options = RunOptions(None, "0.0.0.0", 15000)
    announced = _announcing_admin(agent("10.0.0.7"), options, 15000)
    assert announced.hello.admin == "10.0.0.7:15000"
    assert _announcing_admin(agent(), RunOptions(None, "::1", 9), 9).hello.admin == "[::1]:9"
