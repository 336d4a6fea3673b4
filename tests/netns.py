"""Two boxes on one machine: two network namespaces joined by a veth pair.

``Link()`` makes namespaces ``<prefix>a`` and ``<prefix>b`` with addresses ``a_ip`` and
``b_ip`` on a /30 of their own (10.234.X.0, X random), and removes them on ``close``.
``wrap(side)`` is the command prefix that runs a process in one of them
(``ip netns exec``); the processes still share the machine's file systems, so a daemon
in either is reached through its Unix control socket as usual. ``cut()`` and
``restore()`` take the link down and up (``ip link set``), ``throttle(rate)`` makes it
slow (``tc``'s token bucket). Root only: ``unavailable()``
says why not, for a skip.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess

PORT = 7447


def unavailable() -> str | None:
    """Why two namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "no ip command (iproute2)"
    name = f"plprobe{os.getpid()}"
    done = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if done.returncode != 0:
        return f"ip netns add fails here: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class Link:
    """Two namespaces and the veth pair between them."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.a, self.b = f"pl{tag}a", f"pl{tag}b"
        self.a_dev, self.b_dev = f"v{tag}a", f"v{tag}b"
        subnet = secrets.randbelow(250) + 1
        self.a_ip, self.b_ip = f"10.234.{subnet}.1", f"10.234.{subnet}.2"
        made: list[str] = []
        try:
            for ns in (self.a, self.b):
                _ip("netns", "add", ns)
                made.append(ns)
            _ip("link", "add", self.a_dev, "type", "veth", "peer", "name", self.b_dev)
            for ns, dev, ip in ((self.a, self.a_dev, self.a_ip), (self.b, self.b_dev, self.b_ip)):
                _ip("link", "set", dev, "netns", ns)
                _ip("-n", ns, "addr", "add", f"{ip}/30", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            for ns in made:
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            raise

    def wrap(self, side: str) -> list[str]:
        """The command prefix that runs a process on side ``a`` or ``b``."""
        return ["ip", "netns", "exec", self.a if side == "a" else self.b]

    def endpoint(self, side: str, port: int = PORT, proto: str = "tcp") -> str:
        return f"{proto}/{self.a_ip if side == 'a' else self.b_ip}:{port}"

    def cut(self) -> None:
        _ip("-n", self.a, "link", "set", self.a_dev, "down")

    def restore(self) -> None:
        _ip("-n", self.a, "link", "set", self.a_dev, "up")

    def throttle(self, rate: str) -> None:
        """Make a's side of the link slow (a token bucket of ``rate``, as ``tc`` writes it:
        "2mbit"), as a congested uplink is: what a sends waits, and queues."""
        done = subprocess.run(
            ["tc", "-n", self.a, "qdisc", "replace", "dev", self.a_dev, "root", "tbf",
             "rate", rate, "burst", "32kbit", "latency", "400ms"],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"tc qdisc replace … tbf: {done.stderr.strip()}")

    def unthrottle(self) -> None:
        subprocess.run(
            ["tc", "-n", self.a, "qdisc", "del", "dev", self.a_dev, "root"], capture_output=True
        )

    def close(self) -> None:
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
