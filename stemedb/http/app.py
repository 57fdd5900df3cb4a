"""The WSGI application: ``create_app(store, settings)`` and the gunicorn entry.

``create_app`` takes an open store (or a :class:`StoreHandle` that is still
opening) and settings, and holds no global state, so tests can build as many
apps as they like.  ``get_app()`` is what gunicorn loads in its worker: it
reads the ``STEMEDB_*`` settings, opens the store in the worker (never before
the fork) and returns one WSGI callable that serves the API on
``STEMEDB_BIND`` and the dashboard on ``STEMEDB_DASHBOARD_BIND``; gunicorn
listens on both and the callable routes by the listening socket's port
(``SERVER_PORT``, which gunicorn takes from the socket, not the Host header).
"""
from __future__ import annotations

import logging
import os
import sys
import time

from ..config import Settings
from ..core.malloc import pin_mmap_threshold
from . import errors as http_errors
from .auth import KeyRing, bind_host
from .base import StemeApp
from .dashboard import create_dashboard_app
from .fastquery import PATH as FAST_PATH
from .fastquery import FastQuery
from .handle import StoreHandle
from .logs import configure_logging
from .metrics import Metrics
from .middleware import NOSNIFF, Authenticate, Gate, HostGuard, Limit, Observe, parse_proxies
from .openapi import openapi_bytes
from .ratelimit import CircuitBreaker, RateLimiter, parse_rate_limits
from .resources import ROUTES, OpenAPIResource, RecentWrites

log = logging.getLogger("stemedb.http")

# How long a worker started by a reload (HUP) or a respawn waits for the
# previous worker to finish its graceful shutdown and release LOCK.
RELOAD_LOCK_WAIT = 30.0
WORKER_BOOT_ERROR = 3  # gunicorn's arbiter halts when a worker exits with this


class ServerState:
    """What the resources and middleware share; one per app."""

    def __init__(self, handle: StoreHandle, settings: Settings, keyring: KeyRing,
                 metrics: Metrics, limiter, breaker, started_at: float):
        self.handle = handle
        self.settings = settings
        self.keyring = keyring
        self.metrics = metrics
        self.limiter = limiter
        self.breaker = breaker
        self.started_at = started_at
        self.recent = RecentWrites()


def create_app(store, settings: Settings | None = None, *, keyring: KeyRing | None = None,
               breaker: CircuitBreaker | None = None, limiter: RateLimiter | None = None,
               started_at: float | None = None) -> StemeApp:
    """The API as a Falcon app.  ``store`` is an open Store or a StoreHandle.

    Keys come from ``settings.api_keys_file`` unless ``keyring`` is given;
    rate limits from ``settings.rate_limits``.  Raises ``ConfigError`` for bad
    settings (a bad keys file, an unparsable rate limit).
    """
    settings = settings or Settings()
    handle = store if isinstance(store, StoreHandle) else StoreHandle(store)
    started_at = time.monotonic() if started_at is None else started_at
    keyring = keyring if keyring is not None else KeyRing(settings.api_keys_file)
    rules = parse_rate_limits(settings.rate_limits)
    limiter = limiter if limiter is not None else RateLimiter(rules)
    breaker = breaker if breaker is not None else CircuitBreaker.from_rules(rules)
    metrics = Metrics(handle, settings.data_dir, started_at, archive=bool(settings.archive_s3))
    state = ServerState(handle, settings, keyring, metrics, limiter, breaker, started_at)
    handle.when_ready(lambda s: s.set_commit_observer(metrics.commit_observer))
    from ..cluster.node import ClusterCollector
    metrics.registry.register(ClusterCollector(handle))   # stemedb_cluster_* (cluster mode)

    # One component doing the work of five (middleware.Gate): request id,
    # metrics and log line; key; rate limit and breaker; nosniff; and last the
    # access log's fields (logs.AccessContext)
    gate = Gate(
        Observe(metrics, parse_proxies(settings.trusted_proxies)),
        Authenticate(keyring, limiter, metrics),
        Limit(limiter, breaker, metrics),
        NOSNIFF, access_context=True)
    app = StemeApp(middleware=[gate])
    app.gate = gate     # fastquery.FastQuery answers with the same parts
    app.req_options.strip_url_path_trailing_slash = True
    http_errors.register(app)
    for path, resource in ROUTES:
        app.add_route(path, resource(state))
    app.add_route("/openapi.json", OpenAPIResource(state, openapi_bytes()))
    app.state = state
    return app


class PortRouter:
    """One WSGI callable for two listening sockets: the dashboard's port goes to
    the dashboard app, everything else to the API."""

    def __init__(self, api, dashboard, dashboard_bind: str, api_bind: str, fast=None):
        self.api = api
        # POST /v1/query's plain case without Falcon (fastquery); None: all to the API
        self.fast = fast
        self.dashboard = dashboard
        self.state = api.state
        self.port = dashboard_bind.rsplit(":", 1)[-1]
        same_port = api_bind.rsplit(":", 1)[-1] == self.port
        # Same port on two addresses: tell them apart by the address too.
        self.host = bind_host(dashboard_bind) if same_port else None

    def __call__(self, environ, start_response):
        if environ.get("SERVER_PORT") == self.port and (
                self.host is None or environ.get("SERVER_NAME") == self.host):
            return self.dashboard(environ, start_response)
        if (self.fast is not None and environ.get("PATH_INFO") == FAST_PATH
                and environ.get("REQUEST_METHOD") == "POST"):
            return self.fast(environ, start_response)
        return self.api(environ, start_response)


def build_wsgi(handle: StoreHandle, settings: Settings, started_at: float | None = None):
    """The API and the dashboard behind one :class:`PortRouter`."""
    api = create_app(handle, settings, started_at=started_at)
    dashboard = create_dashboard_app(api.state)
    # A keyless server answers only loopback Host names (DNS rebinding).
    return HostGuard(PortRouter(api, dashboard, settings.dashboard_bind, settings.bind,
                                FastQuery(api)),
                     api.state.keyring, settings.allow_anonymous)


def open_store_for(settings: Settings, lock_timeout: float):
    """The store with every store setting of ``settings`` (store.STORE_SETTINGS:
    durability, segment_size, batch_delay_ms, snapshot_interval, audit, ...);
    only the LOCK wait differs from ``settings.lock_timeout`` for a reloaded
    worker (get_app)."""
    from ..cluster.stream import ClusterSettings
    from ..core.store import open_store
    cluster = ClusterSettings.from_env()     # a bad cluster setting fails before the open
    if cluster is not None:                  # an empty data directory starts from the archive
        from ..cluster.bootstrap import bootstrap
        bootstrap(settings.data_dir, settings.archive_s3, endpoint_url=settings.s3_endpoint_url)
    store = open_store(settings=settings, lock_timeout=lock_timeout)
    if cluster is not None:                  # cluster mode (stemedb/cluster)
        from ..cluster.node import ClusterNode
        try:
            ClusterNode(store, cluster).start()
        except BaseException:
            store.close()
            raise
    return store


def get_app():
    """The gunicorn entry (``stemedb.http.app:get_app()``), called in the worker.

    The store opens in a background thread (see :mod:`stemedb.http.handle`);
    if it cannot open, the worker exits with gunicorn's boot-error status, so
    the whole server stops with a non-zero exit and the reason on stderr.
    """
    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    # The worker runs for weeks and its indexes grow by copying: keep the
    # outgrown arrays on mmap so they go back to the system (core/malloc.py).
    pin_mmap_threshold()
    respawn = os.environ.get("STEMEDB_WORKER_RESPAWN") == "1"
    lock_timeout = max(settings.lock_timeout, RELOAD_LOCK_WAIT) if respawn else settings.lock_timeout
    started_at = time.monotonic()

    def fail(exc):
        sys.stderr.flush()
        os._exit(WORKER_BOOT_ERROR)

    handle = StoreHandle.open_in_background(lambda: open_store_for(settings, lock_timeout),
                                            on_failure=fail)
    return build_wsgi(handle, settings, started_at)
