"""``stemedb serve``: gunicorn, configured for a store that one process owns.

* **one worker**: the store's ``LOCK`` admits one process, and group commit
  only pays when all writers share it; ``gthread`` with ``settings.threads``
  threads gives the concurrency, as :class:`stemedb.http.worker.StemeWorker`
  (error JSON for what gunicorn refuses; slow clients hold no thread).
* **no preload_app**: a store opened in the master before the fork would be
  shared by accident; ``get_app()`` opens it in the worker.
* **max_requests = 0**: a recycled worker would close and reopen the store.
* **reloads** (``kill -HUP``): gunicorn starts the new worker before the old
  one has finished; every worker after the first waits up to 30 s for
  ``LOCK`` (``STEMEDB_WORKER_RESPAWN``, set by the ``post_fork`` hook), while
  the first fails at once, so a second server on a held store exits at once
  with ``Store is locked by PID <pid>``.
* **SIGTERM**: gunicorn stops accepting, lets in-flight requests finish
  within ``graceful_timeout``; the ``worker_exit`` hook then snapshots and
  closes the store (which writes ``metadata.json``); the master exits 0.

``gunicorn_options`` is shared with ``ops/gunicorn.conf.py`` so that
``gunicorn -c ops/gunicorn.conf.py`` (systemd) runs the same configuration.
TLS for small installs: gunicorn's ``certfile``/``keyfile`` options can be
added to that file; normally nginx or envoy terminates TLS.
"""
from __future__ import annotations

import logging
import os
import sys

from ..config import Settings
from ..errors import ConfigError
from .auth import KeyRing, check_anonymous_bind
from .ratelimit import parse_rate_limits

log = logging.getLogger("stemedb.http")


def pre_fork(server, worker):
    server._stemedb_spawned = getattr(server, "_stemedb_spawned", 0) + 1


def post_fork(server, worker):
    # In the child: every worker after the first waits for LOCK (a reload or
    # a respawn while the previous worker finishes).
    os.environ["STEMEDB_WORKER_RESPAWN"] = "1" if getattr(server, "_stemedb_spawned", 1) > 1 else "0"


def worker_exit(server, worker):
    """In the worker, after gunicorn's graceful stop: snapshot, close, metadata.json."""
    app = getattr(worker, "wsgi", None)
    state = getattr(app, "state", None)
    if state is not None:
        try:
            state.handle.close(timeout=float(server.cfg.graceful_timeout))
        except Exception:  # noqa: BLE001 - logged; the log is still the truth on restart
            log.exception("closing the store at shutdown failed")


def worker_class() -> str:
    """gthread with the contract's error JSON and slow-client protection
    (:mod:`stemedb.http.worker`), or plain gthread on a gunicorn too old for it."""
    from .worker import supported
    if supported():
        return "stemedb.http.worker.StemeWorker"
    log.warning("gunicorn %s lacks the gthread structure stemedb.http.worker builds on; "
                "using plain gthread (errors before the app are HTML, slow clients hold "
                "threads); install gunicorn >= 24", _gunicorn_version())
    return "gthread"


def _gunicorn_version() -> str:
    import gunicorn
    return getattr(gunicorn, "__version__", "?")


def gunicorn_options(settings: Settings) -> dict:
    """The gunicorn settings of ``stemedb serve`` (also ``ops/gunicorn.conf.py``)."""
    binds = [settings.bind]
    if settings.dashboard_bind and settings.dashboard_bind != settings.bind:
        binds.append(settings.dashboard_bind)
    return {
        "bind": binds,
        "workers": 1,
        "worker_class": worker_class(),
        "threads": settings.threads,
        "preload_app": False,
        "max_requests": 0,
        "graceful_timeout": settings.graceful_timeout,
        "timeout": 30,
        "keepalive": 5,
        "backlog": 2048,
        # GET /v1/query carries its parameters in the request line; gunicorn's
        # default 4094 bytes is short for a 512-byte UTF-8 concept path
        # percent-encoded.  8190 is its maximum short of "unlimited".
        "limit_request_line": 8190,
        # gunicorn's lines in StemeDB's format, and the access log
        # (STEMEDB_ACCESS_LOG) as stemedb.access lines: stemedb.http.logs
        "logger_class": "stemedb.http.logs.GunicornLogger",
        "accesslog": None,
        "errorlog": "-",
        "loglevel": settings.log_level,
        "proc_name": "stemedb",
        # gunicorn >= 24 opens a control socket at one fixed per-user path:
        # two servers (tests, several stores) would fight over it.
        "control_socket_disable": True,
        "pre_fork": pre_fork,
        "post_fork": post_fork,
        "worker_exit": worker_exit,
    }


def preflight(settings: Settings) -> str | None:
    """What must be true before gunicorn starts; the refusal message otherwise."""
    try:
        keyring = KeyRing(settings.api_keys_file)
        parse_rate_limits(settings.rate_limits)
    except ConfigError as exc:
        return str(exc)
    return check_anonymous_bind([settings.bind, settings.dashboard_bind], keyring.configured,
                                settings.allow_anonymous)


def serve(settings: Settings) -> int:
    """Run gunicorn in the foreground until it is stopped; its exit status."""
    from gunicorn.app.base import BaseApplication

    problem = preflight(settings)
    if problem:
        print(f"stemedb serve: {problem}", file=sys.stderr)
        return 2
    # The worker reads the settings from the environment (get_app); make the
    # ones given on the command line visible to it.
    os.environ.update(settings_env(settings))
    options = gunicorn_options(settings)

    class StemeApplication(BaseApplication):
        def load_config(self):
            for key, value in options.items():
                if key in self.cfg.settings:  # options newer than this gunicorn are skipped
                    self.cfg.set(key, value)

        def load(self):
            from .app import get_app
            return get_app()

    try:
        StemeApplication().run()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def settings_env(settings: Settings) -> dict:
    """``STEMEDB_*`` variables for every setting that differs from the default."""
    import dataclasses
    out = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if value == f.default or value is None:
            continue
        if isinstance(value, bool):
            value = "1" if value else "0"
        out[Settings.env_name(f.name)] = str(value)
    return out
