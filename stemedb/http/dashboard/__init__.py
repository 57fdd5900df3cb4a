"""The dashboard: one page (plain HTML, CSS and JavaScript, no build step)
and the small JSON API it polls, served on ``STEMEDB_DASHBOARD_BIND``.

It shares the API app's store, metrics and keys: when keys are configured its
JSON endpoints need a ``read`` key (the page asks for one and keeps it in the
tab's sessionStorage); the page and its static files need none.  Every answer
carries a Content-Security-Policy that admits only the page's own files
(:data:`CSP`), ``X-Frame-Options: DENY`` and ``X-Content-Type-Options: nosniff``.

``/api/summary`` (polled every 2 s) gives health, counts, the cumulative fsync
and group-commit histograms (the page turns differences between polls into
ingest rate and fsync latency over time) and the last writes made through this
server.  ``/api/skeptic`` and ``/api/layered`` feed the conflict explorer,
``/api/trace/{hash}`` the retraction impact view.
"""
from __future__ import annotations

import os
import time

import falcon

from .. import errors as http_errors
from ..middleware import NOSNIFF, Authenticate, Observe, SecurityHeaders, parse_proxies
from ..resources import check_hash, from_params, health, query_answer, send
from .. import schemas as S
from ..base import StemeApp
from ...errors import NotFound

HERE = os.path.dirname(os.path.abspath(__file__))
STATIC = {"dashboard.css": "text/css; charset=utf-8",
          "dashboard.js": "text/javascript; charset=utf-8"}


# The page loads only its own script and style sheet, and fetches only its own
# JSON; nothing inline, nothing from elsewhere, never inside a frame.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY", **NOSNIFF}


def _read(name: str) -> bytes:
    with open(os.path.join(HERE, name), "rb") as f:
        return f.read()


class _Page:
    scope = None

    def __init__(self, state):
        self.state = state
        self.page = _read("index.html")
        self.static = {name: _read(name) for name in STATIC}

    def on_get(self, req, resp):
        resp.content_type = "text/html; charset=utf-8"
        resp.data = self.page
        resp.set_header("Cache-Control", "no-cache")

    def on_get_static(self, req, resp, name):
        if name not in self.static:
            raise falcon.HTTPNotFound()
        resp.content_type = STATIC[name]
        resp.data = self.static[name]
        resp.set_header("Cache-Control", "no-cache")


class _Api:
    scope = {"GET": "read"}

    def __init__(self, state):
        self.state = state

    def on_get_summary(self, req, resp):
        st = self.state
        doc, status = health(st)
        send(resp, 200, {
            "now": time.time(), "health": doc, "health_status": status,
            "keys_required": st.keyring.configured,
            "fsync": st.metrics.histogram_summary(st.metrics.fsync),
            "batch": st.metrics.histogram_summary(st.metrics.batch),
            "recent": st.recent.items()})

    def on_get_skeptic(self, req, resp):
        kwargs = S.to_kwargs(from_params(req, S.SkepticIn))
        path, predicate = kwargs.pop("concept_path"), kwargs.pop("predicate")
        send(resp, 200, self.state.handle.get().skeptic(path, predicate, **kwargs))

    def on_get_layered(self, req, resp):
        kwargs = S.to_kwargs(from_params(req, S.QueryIn))
        path = kwargs.pop("concept_path")
        kwargs["lens"] = "layered"
        result = self.state.handle.get().query(path, agent=req.context.key_id, **kwargs)
        send(resp, 200, query_answer(result))

    def on_get_trace(self, req, resp, hash):
        t = self.state.handle.get().trace(check_hash(hash))
        if t is None:
            raise NotFound(f"no assertion with hash {hash}", field="hash")
        send(resp, 200, t)


def create_dashboard_app(state) -> falcon.App:
    """The dashboard app over the API app's shared state."""
    app = StemeApp(middleware=[
        Observe(state.metrics, parse_proxies(state.settings.trusted_proxies),
                prefix="dashboard:"),
        Authenticate(state.keyring, state.limiter, state.metrics),
        SecurityHeaders(HEADERS),
    ])
    http_errors.register(app)
    page, api = _Page(state), _Api(state)
    app.add_route("/", page)
    app.add_route("/static/{name}", page, suffix="static")
    app.add_route("/api/summary", api, suffix="summary")
    app.add_route("/api/skeptic", api, suffix="skeptic")
    app.add_route("/api/layered", api, suffix="layered")
    app.add_route("/api/trace/{hash}", api, suffix="trace")
    app.state = state
    return app
