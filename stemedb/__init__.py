"""StemeDB: a database for claims that disagree.

One way in: :func:`open_store`.
"""
from .errors import StemeError
from .model import Assertion

__version__ = "0.1.0"

__all__ = ["open_store", "Store", "Assertion", "StemeError", "__version__"]


def __getattr__(name):
    # The store pulls in numpy and the engine; load it on first use so that
    # ``import stemedb.client`` stays light.
    if name in ("open_store", "Store"):
        from .core import store
        return getattr(store, name)
    raise AttributeError(name)
