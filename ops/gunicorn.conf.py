"""gunicorn configuration for StemeDB under systemd: the same as `stemedb serve`.

    gunicorn -c ops/gunicorn.conf.py

Settings come from the STEMEDB_* environment (an EnvironmentFile in the unit);
the options themselves are stemedb.http.server.gunicorn_options, so this file
and `stemedb serve` cannot disagree: one worker that owns the store (gthread
with the contract's error JSON and slow-client protection, stemedb.http.worker),
no preload_app, max_requests = 0, and hooks that make a reloaded worker wait
for LOCK and a stopping worker snapshot and close the store.

TLS for a small install without a proxy: add
    certfile = "/etc/stemedb/tls.crt"
    keyfile = "/etc/stemedb/tls.key"
below (normally nginx or envoy terminates TLS in front of 127.0.0.1).
"""
import logging
import sys

from stemedb.config import Settings, unknown_variables
from stemedb.http.logs import configure_logging
from stemedb.http.server import gunicorn_options, preflight

_settings = Settings.from_env()
configure_logging(_settings.log_level, _settings.log_format)
for _warning in unknown_variables():     # a misspelt variable, as `stemedb serve` warns
    logging.getLogger("stemedb").warning(_warning)
_problem = preflight(_settings)
if _problem:
    print(f"stemedb: {_problem}", file=sys.stderr)
    sys.exit(2)

globals().update(gunicorn_options(_settings))
wsgi_app = "stemedb.http.app:get_app()"
