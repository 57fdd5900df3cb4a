"""The HTTP server: Falcon under gunicorn (see ``docs/http.md``).

``create_app(store, settings)`` in :mod:`stemedb.http.app` builds the API;
``stemedb.http.app:get_app()`` is the gunicorn entry; ``stemedb serve``
(:mod:`stemedb.http.server`) runs it.  The HTTP layer imports the store,
never the reverse.
"""
