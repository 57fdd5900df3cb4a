"""ops/cluster: the NATS configs nats-server accepts, fsync every write,
take the largest assertion of a 16 MiB batch body as one message and allow
an atomic batch of 10,000 messages (the API's batch limit)."""
import os
import re
import subprocess

import pytest

from .natscluster import nats_server_binary

OPS = os.path.join(os.path.dirname(__file__), "..", "..", "ops", "cluster")
CONFS = [os.path.join(OPS, f"nats-{i}.conf") for i in (1, 2, 3)]


@pytest.mark.parametrize("path", CONFS)
def test_nats_config_is_valid_and_durable(path):
    text = open(path).read()
    assert re.search(r"^\s*sync_interval:\s*always\b", text, re.M)
    assert int(re.search(r"^max_payload:\s*(\d+)", text, re.M).group(1)) >= 16 * 1024 * 1024
    batch = re.search(r"limits\s*\{\s*batch\s*\{\s*max_msgs:\s*(\d+)", text)
    assert batch and int(batch.group(1)) >= 10_000
    binary = nats_server_binary()
    if binary is None:
        pytest.skip("nats-server not installed")
    r = subprocess.run([binary, "-c", path, "-t"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_three_configs_route_to_each_other():
    names = []
    for path in CONFS:
        text = open(path).read()
        names.append(re.search(r"^server_name:\s*(\S+)", text, re.M).group(1))
        routes = re.findall(r"nats-route://([\w-]+):6222", text)
        assert sorted(routes + [names[-1]]) == ["nats-1", "nats-2", "nats-3"]
    assert len(set(names)) == 3
