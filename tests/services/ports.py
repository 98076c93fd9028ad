"""A loopback port for a server that another process binds later (a container, an agent, a daemon).

``free_port()`` returns a port that was free a moment ago: until the server binds it, any bind(0) or
outgoing connection on this machine may be handed the same port by the kernel. ``reserved_port()``
leaves the port in TIME_WAIT instead (a connection to it, closed from its side first), as
ephemeral-port-reserve does: for 60 s the kernel hands it to no bind(0) and no connect(), while a server
that binds it explicitly with SO_REUSEADDR (uvicorn, Go's net.Listen, sshd, dnsmasq, nginx, Python's
http.server all do) gets it at once.
"""
from __future__ import annotations

import socket


def reserved_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, 0))
        listener.listen(1)
        address = listener.getsockname()
        with socket.socket() as client:
            client.connect(address)
            accepted, _ = listener.accept()
            accepted.close()  # this side closes first: its end of the connection (our port) is in TIME_WAIT
        return address[1]
