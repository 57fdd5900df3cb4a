"""Settings are one documented table: .env.example lists every variable."""
import dataclasses
import pathlib

import pytest

from stemedb.config import Settings
from stemedb.errors import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONTRACT_NAMES = {
    "STEMEDB_DATA_DIR", "STEMEDB_BIND", "STEMEDB_DASHBOARD_BIND", "STEMEDB_DURABILITY",
    "STEMEDB_SEGMENT_SIZE", "STEMEDB_API_KEYS_FILE", "STEMEDB_ALLOW_ANONYMOUS",
    "STEMEDB_REQUIRE_SIGNATURES", "STEMEDB_RATE_LIMITS", "STEMEDB_TRUSTED_PROXIES",
    "STEMEDB_BACKUP_DIR", "STEMEDB_PURE_PYTHON", "STEMEDB_REQUIRE_FAST",
    "STEMEDB_METRICS_REQUIRE_KEY",
}


def env_example() -> dict[str, str]:
    out = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k] = v
    return out


def test_env_example_lists_every_setting_with_its_default():
    listed = env_example()
    names = {Settings.env_name(f.name) for f in dataclasses.fields(Settings)}
    assert set(listed) == names, "every setting must appear in .env.example, and nothing else"
    assert CONTRACT_NAMES <= names, "the contract's variable names are fixed"
    parsed = Settings.from_env(listed)
    assert parsed == Settings(), ".env.example must state the real defaults"


def test_contract_defaults():
    s = Settings()
    assert s.data_dir == "./data" and s.bind == "127.0.0.1:18180"
    assert s.dashboard_bind == "127.0.0.1:18188" and s.durability == "fsync"
    assert s.segment_size == 67108864 and s.backup_dir == "./backups"


@pytest.mark.parametrize("var,value,field", [
    ("STEMEDB_DURABILITY", "sometimes", "durability"),
    ("STEMEDB_SEGMENT_SIZE", "big", "segment_size"),
    ("STEMEDB_ALLOW_ANONYMOUS", "maybe", "allow_anonymous"),
])
def test_bad_setting_names_the_variable(var, value, field):
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({var: value})
    assert exc.value.field == field
    assert var in str(exc.value) or field.upper() in str(exc.value)
