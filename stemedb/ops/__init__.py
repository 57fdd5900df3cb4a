"""Operations: online backup, restore, WAL archival and point-in-time restore,
fsync validation, backup retention.

Each command module has ``main(argv) -> int`` and is dispatched by
``stemedb.cli`` (``stemedb backup``, ``stemedb restore``, ``stemedb
fsync-check``).  None of them takes the store's ``LOCK`` except restore,
which holds it while it swaps directories so that no server can start on a
half-restored store.
"""
