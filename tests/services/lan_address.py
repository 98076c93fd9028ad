"""An IPv4 address of this machine outside 127.0.0.0/8, on a network interface of the session's own.

A Docker engine talks plain HTTP to a registry on 127.0.0.0/8 without being told; to any other address
only when its ``insecure-registries`` name it. A registry listening here is, to the test engine (host
networking, started without ``--insecure-registry``), what ``registry.lan:5000`` is to a laptop's.

The interface is one end of a veth pair (``msha<tag>``, its peer ``mshb<tag>``, both up: the kernel here
has no dummy driver, and veth is what Docker itself uses), with a /32 in 10.213.0.0/24 that no
interface has (the Nomad double's bridge networks take 10.213.1-254.0/24). ``stop`` deletes the pair
(deleting one end deletes the other), and the address with it.
"""
from __future__ import annotations

import os
import random
import subprocess
from dataclasses import dataclass

from . import need_binary, session_name, unavailable


@dataclass
class LanAddress:
    address: str  # 10.213.0.N
    interface: str  # msha<tag>
    peer: str  # mshb<tag>


def start() -> LanAddress:
    ip = need_binary("ip", "iproute2")
    if os.geteuid() != 0:
        unavailable("a network interface of the session's own needs root")
    interface, peer = session_name("msha"), session_name("mshb")
    subprocess.run([ip, "link", "del", interface], capture_output=True)  # a crashed session's, same pid
    used = subprocess.run([ip, "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    free = [n for n in range(1, 255) if f" 10.213.0.{n}/" not in used]
    address = f"10.213.0.{random.choice(free)}"
    steps = [[ip, "link", "add", interface, "type", "veth", "peer", "name", peer],
             [ip, "addr", "add", f"{address}/32", "dev", interface],
             [ip, "link", "set", interface, "up"], [ip, "link", "set", peer, "up"]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            subprocess.run([ip, "link", "del", interface], capture_output=True)
            unavailable(f"cannot give this machine an address of the tests' own (`{' '.join(step[1:])}`): "
                        f"{done.stderr.strip()}")
    return LanAddress(address=address, interface=interface, peer=peer)


def stop(lan: LanAddress) -> None:
    subprocess.run([need_binary("ip", "iproute2"), "link", "del", lan.interface], capture_output=True)
