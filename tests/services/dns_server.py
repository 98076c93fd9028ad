"""dnsmasq on a loopback port, with a config folder and a restart command (as a host would have).

dnsmasq only answers a ``cname=`` whose target it knows, so the fixture declares the proxy's name
(``traefik.lan``) with ``host-record``. Like a host's dnsmasq service, it refuses to start on a
configuration it cannot parse (the restart command then fails and DNS is down until a good one),
and ``test_command`` is the check of the whole configuration (``dnsmasq --test``) a host would run.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import free_port, need_binary, stop_pids, unavailable, wait_for

PROXY_NAME = "traefik.lan"
PROXY_ADDRESS = "127.0.0.1"


@dataclass
class DnsServer:
    port: int
    conf_dir: Path  # dnsmasq reads every file here (the `dnsmasq_dir` setting)
    restart_command: str  # a script that restarts it (the `dnsmasq_restart_command` setting)
    test_command: str  # checks the configuration it would start with (the `dnsmasq_test_command` setting)
    pid_file: Path
    root: Path

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def resolve(self, name: str, rdtype: str = "A"):
        import dns.resolver

        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = self.port
        resolver.lifetime = 3
        return resolver.resolve(name, rdtype)


def start(root: Path) -> DnsServer:
    binary = need_binary("dnsmasq", "dnsmasq-base")
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    conf_dir = root / "dnsmasq.d"
    conf_dir.mkdir(exist_ok=True)
    port = free_port()
    pid_file = root / "dnsmasq.pid"
    base_conf = root / "dnsmasq.conf"
    base_conf.write_text(
        f"port={port}\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\n"
        f"host-record={PROXY_NAME},{PROXY_ADDRESS}\nconf-dir={conf_dir}\npid-file={pid_file}\n"
        f"user=root\nlog-facility={root / 'dnsmasq.log'}\n"
    )
    restart = root / "restart-dnsmasq"
    restart.write_text(
        "#!/bin/sh\n"
        f"[ -f {pid_file} ] && kill $(cat {pid_file}) 2>/dev/null\n"
        f"for i in $(seq 50); do [ -f {pid_file} ] && kill -0 $(cat {pid_file}) 2>/dev/null || break; sleep 0.1; done\n"
        # dnsmasq binds its port at once or exits 2 ("address in use"): between the old one's exit and the new one's
        # bind, another process's ephemeral port (a DNS query's, under xdist another worker's) may hold it a moment
        f"for i in $(seq 25); do {binary} --conf-file={base_conf}; rc=$?; [ $rc -ne 2 ] && exit $rc; sleep 0.2; done\n"
        "exit 2\n"
    )
    os.chmod(restart, 0o755)
    result = subprocess.run([str(restart)], capture_output=True, text=True)
    if result.returncode != 0:
        unavailable(f"dnsmasq did not start: {result.stderr.strip()}")
    server = DnsServer(port=port, conf_dir=conf_dir, restart_command=str(restart),
                       test_command=f"{binary} --test --conf-file={base_conf}", pid_file=pid_file, root=root)
    wait_for(lambda: server.resolve(PROXY_NAME), 10, "dnsmasq")
    return server


def stop(server: DnsServer) -> None:
    """dnsmasq (a daemon: its parent is init, found by its pid file) stopped, and waited for."""
    pid = server.pid()
    try:
        ours = pid and str(server.root / "dnsmasq.conf").encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        ours = False  # ended already (the pid file stays)
    if ours:
        stop_pids([pid], timeout=5)
