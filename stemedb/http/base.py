"""The Falcon app type shared by the API and the dashboard (no other imports,
so both can use it without importing each other)."""
from __future__ import annotations

from typing import Any

import falcon


class StemeApp(falcon.App):
    """A Falcon app that carries its ``ServerState`` (stemedb.http.app) as ``app.state``."""

    state: Any
    gate: Any
