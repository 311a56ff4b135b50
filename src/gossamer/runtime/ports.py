"""Free ports on loopback for a mesh's processes, preferring the documented defaults."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from pathlib import Path


class PortInUseError(Exception):
    """A port the user asked for is taken; the message names it and, if known, its owner."""


class Ports:
    """Hands out ports no other process of this mesh got, each free when handed out."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.given: set[int] = set()

    def __repr__(self) -> str:
        return f"<Ports {len(self.given)} given on {self.host}>"

    def __call__(self, preferred: int = 0) -> int:
        """`preferred` when it is free, else any free port."""
        if preferred and preferred not in self.given and self.free(preferred):
            self.given.add(preferred)
            return preferred
        while True:
            with socket.socket() as probe:
                probe.bind((self.host, 0))
                port = int(probe.getsockname()[1])
            if port not in self.given:
                self.given.add(port)
                return port

    def check_free(self, port: int) -> None:
        """PortInUseError, naming the port and its owner if known, unless `port` is free."""
        if port in self.given or not self.free(port):
            raise PortInUseError(f"port {port} is in use{owner_of(port)}")

    def free(self, port: int) -> bool:
        """Whether nothing listens on `port` now."""
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((self.host, port))
            except OSError:
                return False
        return True


def owner_of(port: int) -> str:
    """` (by PID 123, nginx)` when /proc tells who listens on the port, else ``."""
    owner = _owner(port)
    return f" (by PID {owner[0]}, {owner[1]})" if owner else ""


def _owner(port: int) -> tuple[str, str] | None:
    """(PID, command name) of the process listening on `port`, when /proc tells."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    for process in Path("/proc").iterdir():
        if not process.name.isdigit():
            continue
        if _holds(process, inodes):
            try:
                name = (process / "comm").read_text(encoding="utf-8").strip()
            except OSError:
                name = "?"
            return process.name, name
    return None


def ports_held_by_others(ports: Sequence[int], pgid: int) -> str:
    """Why a process (group `pgid`; 0 once it exited) cannot be the one serving: `port 15010 is
    held by PID 123 (nc), not by this process`, for the first of `ports` another process
    listens on; "" when none is (a port nobody listens on is the readiness check's to report)."""
    if not ports:
        return ""
    group: list[Path] | None = None
    for port in ports:
        inodes = _listening_inodes(port)
        if not inodes:
            continue
        if pgid > 0 and _holds(Path(f"/proc/{pgid}"), inodes):
            continue
        if group is None:
            group = _group_members(pgid) if pgid > 0 else []
        if any(_holds(member, inodes) for member in group):
            continue
        owner = _owner(port)
        holder = f"PID {owner[0]} ({owner[1]})" if owner else "another process"
        return f"port {port} is held by {holder}, not by this process"
    return ""


def _holds(process: Path, inodes: set[str]) -> bool:
    return any(link[8:-1] in inodes for link in _socket_links(process))


def _group_members(pgid: int) -> list[Path]:
    """The processes of a process group (an app started by a shell, a server's workers)."""
    members = []
    for process in Path("/proc").iterdir():
        if not process.name.isdigit():
            continue
        try:
            # The fifth field of stat is the group; the command before it may hold spaces.
            fields = (process / "stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
        except (OSError, IndexError, UnicodeDecodeError):
            continue
        if fields[2] == str(pgid):
            members.append(process)
    return members


def _socket_links(process: Path) -> list[str]:
    links: list[str] = []
    try:
        descriptors = list((process / "fd").iterdir())
    except OSError:
        return links
    for descriptor in descriptors:
        try:
            target = descriptor.readlink().name
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            links.append(target)
    return links


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        try:
            lines = table.read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


VIP_NETWORKS = tuple(f"127.{second}.0.0/16" for second in range(77, 100))
"""Where a mesh's Service VIPs go: the first of these no other mesh on the host listens in."""


def listening_ipv4() -> set[ipaddress.IPv4Address]:
    """Local IPv4 addresses with a listening TCP socket (from /proc/net/tcp; empty elsewhere)."""
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return set()
    found = set()
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
            address = fields[1].split(":")[0]
            found.add(ipaddress.IPv4Address(int.from_bytes(bytes.fromhex(address), "little")))
    return found


def free_vip_network(candidates: Sequence[str] = VIP_NETWORKS) -> str:
    """The first network where nothing listens yet: two meshes on one host must not share
    VIPs (the second's DNS would send its clients to the first's services)."""
    taken = listening_ipv4()
    for candidate in candidates:
        network = ipaddress.ip_network(candidate)
        if not any(address in network for address in taken):
            return candidate
    return candidates[0]
