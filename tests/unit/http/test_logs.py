"""Log lines: one format for StemeDB's and gunicorn's lines, JSON for log
shippers, the access log, and the line at shutdown."""
from __future__ import annotations

import io
import json
import logging
import os
import sys
from datetime import timedelta

import pytest

from stemedb.config import Settings
from stemedb.errors import ConfigError
from stemedb.http import logs

from .conftest import KEYS, body


def _record(msg="hello %s", args=("world",), level=logging.INFO, name="stemedb.x", **extra):
    r = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    r.__dict__.update(extra)
    return r


def test_text_format_keeps_the_message_verbatim_then_fields():
    line = logs.KeyValueFormatter().format(_record(status=200, path="/a b"))
    stamp, level, name, rest = line.split(" ", 3)
    assert stamp.endswith("Z") and level == "INFO" and name == "stemedb.x"
    assert rest == 'hello world status=200 path="/a b"'


@pytest.mark.parametrize("value, shown", [
    ("plain", "plain"), ("", '""'), ("a=b", '"a=b"'), ('say "x"', '"say \\"x\\""'),
    ("two\nlines", '"two\\nlines"'), ("tab\there", '"tab\\there"'), (1.5, "1.5"),
])
def test_text_format_quotes_only_values_that_would_split_the_line(value, shown):
    line = logs.KeyValueFormatter().format(_record(v=value, skipped=None, _private=1))
    assert line.endswith(f"hello world v={shown}"), "None and _private fields are left out"


def test_json_format_is_one_object_per_line_with_typed_fields():
    try:
        raise ValueError("boom")
    except ValueError:
        rec = _record(msg="Replayed %d entries\nfrom WAL", args=(5,), level=logging.ERROR,
                      status=503, duration_ms=1.5, key_id=None)
        rec.exc_info = sys.exc_info()
    line = logs.JsonFormatter().format(rec)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["msg"] == "Replayed 5 entries\nfrom WAL" and doc["level"] == "ERROR"
    assert doc["logger"] == "stemedb.x" and doc["ts"].endswith("Z")
    assert doc["status"] == 503 and doc["duration_ms"] == 1.5 and "key_id" not in doc
    assert "ValueError: boom" in doc["exc"]


def test_settings_refuse_unknown_format_and_access_log_values():
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({"STEMEDB_LOG_FORMAT": "xml"})
    assert exc.value.field == "log_format" and "text or json" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({"STEMEDB_ACCESS_LOG": "yes"})
    assert exc.value.field == "access_log"
    s = Settings.from_env({"STEMEDB_LOG_FORMAT": "json", "STEMEDB_ACCESS_LOG": "off"})
    assert (s.log_format, s.access_log) == ("json", "off")


def test_configure_logging_switches_the_format():
    logger = logging.getLogger("stemedb")
    try:
        logs.configure_logging("info", "json")
        handler = next(h for h in logger.handlers if getattr(h, "_stemedb", False))
        assert isinstance(handler.formatter, logs.JsonFormatter)
        logs.configure_logging("info", "text")
        assert [h for h in logger.handlers if getattr(h, "_stemedb", False)] == [handler]
        assert isinstance(handler.formatter, logs.KeyValueFormatter)
    finally:
        logs.configure_logging("info", "text")


def _gunicorn_logger(monkeypatch, fmt="json", access="on"):
    from gunicorn.config import Config
    monkeypatch.setenv("STEMEDB_LOG_FORMAT", fmt)
    monkeypatch.setenv("STEMEDB_ACCESS_LOG", access)
    cfg = Config()
    cfg.set("errorlog", "-")
    cfg.set("logger_class", "stemedb.http.logs.GunicornLogger")
    return cfg.logger_class(cfg)


def test_gunicorn_error_log_uses_the_stemedb_format(monkeypatch):
    glog = _gunicorn_logger(monkeypatch)
    handlers = [h for h in glog.error_log.handlers if getattr(h, "_gunicorn", False)]
    assert handlers and all(isinstance(h.formatter, logs.JsonFormatter) for h in handlers)
    glog = _gunicorn_logger(monkeypatch, fmt="text")
    handlers = [h for h in glog.error_log.handlers if getattr(h, "_gunicorn", False)]
    assert all(isinstance(h.formatter, logs.KeyValueFormatter) for h in handlers)


class _Resp:
    status = "201 Created"
    sent = 345
    headers = [("X-Request-Id", "rid-1")]


class _Req:
    method = "POST"
    path = "/v1/assert"


def _capture(name):
    buf = io.StringIO()
    h = logging.StreamHandler(buf)
    h.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger(name)
    logger.addHandler(h)
    return buf, lambda: logger.removeHandler(h)


def test_access_line_fields_and_switch(monkeypatch):
    logs.configure_logging("info", "text")
    buf, done = _capture(logs.ACCESS_LOGGER)
    try:
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v1/assert",
                   "QUERY_STRING": "secret=1", "REMOTE_ADDR": "10.0.0.9",
                   logs.ENV_CLIENT: "192.0.2.7", logs.ENV_KEY_ID: "writer",
                   "HTTP_AUTHORIZATION": "Bearer key-write"}
        glog = _gunicorn_logger(monkeypatch)
        glog.access(_Resp(), _Req(), environ, timedelta(milliseconds=12.5))
        doc = json.loads(buf.getvalue())
        assert doc["msg"] == "POST /v1/assert 201" and doc["logger"] == "stemedb.access"
        assert doc["level"] == "INFO"
        assert {k: doc[k] for k in ("method", "path", "status", "duration_ms", "bytes",
                                    "client", "key_id", "request_id")} == {
            "method": "POST", "path": "/v1/assert", "status": 201, "duration_ms": 12.5,
            "bytes": 345, "client": "192.0.2.7", "key_id": "writer", "request_id": "rid-1"}
        assert "key-write" not in buf.getvalue() and "secret" not in buf.getvalue()
        buf.truncate(0)
        buf.seek(0)
        glog = _gunicorn_logger(monkeypatch, access="off")
        assert not glog.access_log_enabled
        glog.access(_Resp(), _Req(), environ, timedelta(milliseconds=1))
        assert buf.getvalue() == ""
    finally:
        done()


def test_app_hands_key_id_client_and_request_id_to_the_access_log(make_client, keys_file):
    import falcon.testing
    api = make_client(api_keys_file=keys_file).app_
    captured = {}

    def app(environ, start_response):
        out = api(environ, start_response)
        captured.update(environ)
        return out

    r = falcon.testing.TestClient(app).simulate_post(
        "/v1/assert", json=body(), remote_addr="192.0.2.8",
        headers={"Authorization": f"Bearer {KEYS['writer'][0]}", "X-Request-Id": "abc-124"})
    assert r.status_code == 201
    assert captured[logs.ENV_KEY_ID] == "writer"
    assert captured[logs.ENV_REQUEST_ID] == "abc-124"
    assert captured[logs.ENV_CLIENT] == "192.0.2.8"


def test_shutdown_line_says_what_was_flushed(store):
    from stemedb.http.handle import StoreHandle
    for i in range(3):
        store.put(body(value=f"v{i}"))
    seq, count = store.last_seq, store.count
    logs.configure_logging("info", "text")
    buf, done = _capture("stemedb.http")
    try:
        StoreHandle(store).close()
    finally:
        done()
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    shut = [x for x in lines if x["msg"].startswith("Shutdown complete")]
    assert len(shut) == 1
    assert shut[0]["msg"] == (f"Shutdown complete: snapshot at seq {seq}, metadata.json "
                              f"written, {count} assertions")
    assert shut[0]["last_seq"] == seq and shut[0]["assertions"] == count
    with open(os.path.join(store.path, "metadata.json")) as f:
        assert json.load(f)["last_seq"] == seq


def _serve(tmp_path, keys_file, **env):
    from tests.ops.conftest import Server, http_get
    srv = Server(str(tmp_path / "data"), {"STEMEDB_API_KEYS_FILE": keys_file, **env})
    try:
        assert srv.wait_healthy() is not None, srv.output()[-4000:]
        status, _ = http_get(srv.url + "/v1/assert", data=json.dumps(body()).encode(),
                             headers={"Content-Type": "application/json",
                                      "Authorization": f"Bearer {KEYS['writer'][0]}"},
                             method="POST")
        assert status == 201
        status, _ = http_get(srv.url + "/v1/query?concept_path=drugs/semaglutide",
                             headers={"Authorization": "Bearer wrong-key"})
        assert status == 401
    finally:
        srv.stop()
    assert srv.proc.returncode == 0
    with open(srv.log.name) as f:
        return f.read()


def test_serve_json_logs_gunicorn_and_stemedb_alike_with_access_and_shutdown(tmp_path,
                                                                            keys_file):
    out = _serve(tmp_path, keys_file, STEMEDB_LOG_FORMAT="json")
    docs = []
    for line in out.splitlines():
        if not line.strip():
            continue
        try:
            docs.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}\n{out[-3000:]}")
    loggers = {d["logger"] for d in docs}
    assert "gunicorn.error" in loggers, "gunicorn's own lines are in the same format"
    assert any(d["msg"] == "Startup complete" for d in docs)
    access = [d for d in docs if d["logger"] == "stemedb.access"]
    write = next(d for d in access if d["path"] == "/v1/assert")
    assert write["status"] == 201 and write["method"] == "POST" and write["key_id"] == "writer"
    assert write["client"] == "127.0.0.1" and write["bytes"] > 0 and write["duration_ms"] >= 0
    refused = next(d for d in access if d["path"] == "/v1/query")
    assert refused["status"] == 401 and "key_id" not in refused
    assert KEYS["writer"][0] not in out and "wrong-key" not in out, "never the key"
    assert any(d["msg"].startswith("Shutdown complete: snapshot at seq 1, metadata.json "
                                   "written, 1 assertions") for d in docs), out[-3000:]


def test_serve_access_log_off(tmp_path, keys_file):
    out = _serve(tmp_path, keys_file, STEMEDB_ACCESS_LOG="off")
    assert "stemedb.access" not in out
    assert "Shutdown complete" in out
