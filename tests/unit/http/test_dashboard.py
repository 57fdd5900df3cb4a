"""The dashboard app (the page, its JSON API) and the port router."""
from __future__ import annotations

import falcon.testing

from stemedb.config import Settings
from stemedb.http.app import PortRouter, create_app
from stemedb.http.dashboard import create_dashboard_app

from .conftest import NO_LIMITS, auth, body


def make(store, **over):
    api = create_app(store, Settings(rate_limits=NO_LIMITS, **over))
    return api, falcon.testing.TestClient(create_dashboard_app(api.state))


def test_page_and_static_files(store):
    _, d = make(store)
    page = d.simulate_get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="assertion-count"' in page.text and 'rel="icon"' in page.text
    assert d.simulate_get("/static/dashboard.js").headers["content-type"].startswith(
        "text/javascript")
    assert d.simulate_get("/static/dashboard.css").status_code == 200
    assert d.simulate_get("/static/../app.py").status_code == 404
    assert d.simulate_get("/static/nope.js").status_code == 404


def test_summary_reflects_writes(store):
    api, d = make(store)
    a = falcon.testing.TestClient(api)
    assert a.simulate_post("/v1/assert", json=body()).status_code == 201
    s = d.simulate_get("/api/summary").json
    assert s["health"]["assertion_count"] == 1 and s["health_status"] == 200
    assert s["recent"][0]["concept_path"] == "drugs/semaglutide"
    assert s["fsync"]["count"] >= 1 and s["fsync"]["buckets"]
    assert s["keys_required"] is False


def test_conflict_and_trace_views(store):
    api, d = make(store)
    a = falcon.testing.TestClient(api)
    h = a.simulate_post("/v1/assert", json=body()).json["hash"]
    a.simulate_post("/v1/assert", json=body(value="common", source="forum://x"))
    q = {"concept_path": "drugs/semaglutide", "predicate": "gastroparesis_risk"}
    assert len(d.simulate_get("/api/skeptic", params=q).json["claims"]) == 2
    layered = d.simulate_get("/api/layered", params=q).json
    assert layered["lens"] == "layered" and layered["results"]
    assert d.simulate_get(f"/api/trace/{h}").json["assertion"]["hash"] == h
    assert d.simulate_get("/api/trace/" + "0" * 64).status_code == 404
    assert d.simulate_get("/api/trace/zz").status_code == 400


def test_api_needs_a_read_key_when_keys_exist(store, keys_file):
    _, d = make(store, api_keys_file=keys_file)
    assert d.simulate_get("/").status_code == 200, "the page itself is public"
    assert d.simulate_get("/api/summary").status_code == 401
    assert d.simulate_get("/api/summary", headers={"X-API-Key": "key-read"}).status_code == 200
    assert d.simulate_get("/api/summary", headers=auth("reader")).json["keys_required"] is True


def test_port_router_routes_by_listening_port(store):
    api, _ = make(store)
    dash = create_dashboard_app(api.state)
    router = PortRouter(api, dash, "127.0.0.1:18188", "127.0.0.1:18180")
    seen = []

    def call(port, path):
        env = falcon.testing.create_environ(path=path, port=port)
        env["SERVER_PORT"] = str(port)
        body = b"".join(router(env, lambda s, h, e=None: seen.append(s)))
        return seen[-1], body
    assert call(18188, "/")[0].startswith("200") and b"StemeDB" in call(18188, "/")[1]
    assert call(18180, "/")[0].startswith("404")
    assert call(18180, "/v1/health")[0].startswith("200")
    assert call(18188, "/v1/health")[0].startswith("404")
