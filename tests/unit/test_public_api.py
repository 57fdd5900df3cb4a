"""One way in (STYLE principle 2): a short, explicit public surface."""
import subprocess
import sys

import stemedb


def test_public_names_are_pinned():
    assert sorted(stemedb.__all__) == ["Assertion", "StemeError", "Store", "__version__",
                                       "open_store"], "changing the public surface is a decision"
    for name in stemedb.__all__:
        assert getattr(stemedb, name) is not None


def test_importing_the_client_does_not_load_the_engine():
    code = ("import sys, stemedb.client; "
            "print('stemedb.core.store' in sys.modules, 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], "a client needs no engine"


def test_the_http_layer_imports_the_store_never_the_reverse():
    code = "import sys, stemedb.core.store; print(any(m.startswith('stemedb.http') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
