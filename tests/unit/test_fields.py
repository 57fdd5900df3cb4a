"""``_query.Fields``: what the compiled first page reads (and counts) of the
Reader, its State, the ReadCache and the AuditLog at their ``__slots__``
offsets, held to its twin, ``getattr``/``setattr`` (``obj.x += 1``), over
slotted, dict, inheriting, overriding and changed classes, unset slots,
odd values and damaged arguments: the same values and the same errors."""
from __future__ import annotations

import pytest

from stemedb.core import audit as audit_mod
from stemedb.core import readcache, reader
from stemedb.core import state as state_mod

try:
    from stemedb.core import _query  # type: ignore[attr-defined]
except ImportError:     # a pure-Python build: getattr itself is all there is
    _query = None

needs_compiled = pytest.mark.skipif(_query is None, reason="the compiled build's Fields")

NAMES = ("a", "b", "c")


class Slots:
    __slots__ = ("a", "b", "c")


class SlotsDict:
    __slots__ = ("a", "__dict__")


class Plain:
    pass


class Inherits(Slots):
    pass


class Shadows(Slots):
    @property
    def a(self):
        return "shadowed"


class OwnGetattribute(Slots):
    def __getattribute__(self, name):
        return ("own", name)


class Missing(Slots):
    def __getattr__(self, name):
        return ("missing", name)


class OwnSetattr(Slots):
    def __setattr__(self, name, value):
        object.__setattr__(self, name, value * 10 if isinstance(value, int) else value)


def outcome(fn):
    try:
        return ("ok", fn())
    except Exception as e:  # noqa: BLE001 - the error is the outcome compared
        return ("raised", type(e), str(e))


def made(cls, **values):
    """A ``cls`` with ``values`` set where they are kept (past any property
    or __setattr__ of its own)."""
    o = cls()
    for k, v in values.items():
        if issubclass(cls, Slots):
            Slots.__dict__[k].__set__(o, v)
        else:
            object.__setattr__(o, k, v)
    return o


CLASSES = (Slots, SlotsDict, Plain, Inherits, Shadows, OwnGetattribute, Missing, OwnSetattr)


@needs_compiled
@pytest.mark.parametrize("order", [CLASSES, CLASSES[::-1], CLASSES * 2])
def test_read_as_getattr(order):
    f = _query.Fields(NAMES)
    for cls in order:
        for values in ({}, {"a": 1}, {"a": 1, "b": "two", "c": None}, {"b": [3]}):
            o = made(cls, **values)
            for i, name in enumerate(NAMES):
                assert outcome(lambda: f.read(o, i)) == outcome(lambda: getattr(o, name))
                # and again, the class learned
                assert outcome(lambda: f.read(o, i)) == outcome(lambda: getattr(o, name))


@needs_compiled
def test_read_after_the_class_changes():
    """A descriptor put on (or taken off) the class after Fields learned it
    is seen: the class's version tag changed."""
    class C:
        __slots__ = ("a", "b", "c")
    f = _query.Fields(NAMES)
    o = C()
    o.a = 1
    assert f.read(o, 0) == 1
    slot = C.__dict__["a"]
    C.a = property(lambda self: "now a property")
    try:
        assert f.read(o, 0) == "now a property" == o.a
    finally:
        C.a = slot
    assert f.read(o, 0) == 1 == o.a

    class Base:
        __slots__ = ("a", "b", "c")

    class Sub(Base):
        pass
    s = Sub()
    s.a = 5
    assert f.read(s, 0) == 5
    Base.a = property(lambda self: "from the base")     # a base's change is the class's too
    assert f.read(s, 0) == "from the base" == s.a


@needs_compiled
def test_bump_as_augmented_assignment():
    class Adds:
        def __init__(self, box):
            self.box = box

        def __add__(self, k):
            self.box.a = "replaced while adding"     # the slot changes during the add
            return ("added", k)

    for cls in CLASSES:
        for value in (0, 41, 2**70, -1, 1.5, True, "s", None, [1], "unset"):
            for i, name in enumerate(NAMES):
                kw = {} if value == "unset" else {name: value}
                mine, twin = made(cls, **kw), made(cls, **kw)
                f = _query.Fields(NAMES)

                def plus(o=twin, name=name):
                    setattr(o, name, getattr(o, name) + 1)
                got, want = outcome(lambda: f.add_one(mine, i)), outcome(plus)
                assert got == want, (cls, value, name)
                assert outcome(lambda: getattr(mine, name)) == outcome(lambda: getattr(twin, name))
    mine, twin = Slots(), Slots()
    mine.a, twin.a = Adds(mine), Adds(twin)
    f = _query.Fields(NAMES)
    f.add_one(mine, 0)
    twin.a += 1
    assert mine.a == twin.a == ("added", 1)


@needs_compiled
def test_readonly_and_other_descriptors_by_name():
    """A member that is read-only, a getset (__dict__) or a C type's own:
    read by name, the same as getattr."""
    f = _query.Fields(("start", "__dict__", "real"))
    for o in (slice(1, 2), Plain(), 3.5, 7, object()):
        for i, name in enumerate(("start", "__dict__", "real")):
            assert outcome(lambda: f.read(o, i)) == outcome(lambda: getattr(o, name))


@needs_compiled
def test_damaged_arguments():
    with pytest.raises(ValueError):
        _query.Fields(())
    with pytest.raises(ValueError):
        _query.Fields(("a",) * 7)
    with pytest.raises(ValueError):
        _query.Fields(("a", 1))
    f = _query.Fields(NAMES)
    for i in (-1, 3, 100):
        with pytest.raises(IndexError):
            f.read(Slots(), i)
        with pytest.raises(IndexError):
            f.add_one(Slots(), i)


def test_the_read_objects_keep_their_fields_in_slots():
    """The classes FirstPage reads keep those fields in slots (else it reads
    them by name: right, only slower), and still take other attributes."""
    for cls, names in ((reader.Reader, ("state", "cache", "lock", "audit", "clock")),
                       (readcache.ReadCache, ("_d", "_lock", "answer_hits", "answer_misses")),
                       (audit_mod.AuditLog, ("_ids", "_queue", "quick_below")),
                       (state_mod.State, ("path_ids", "pred_ids", "key_gen", "path_gen", "gen",
                                          "retracted"))):
        for name in names:
            assert type(cls.__dict__[name]).__name__ == "member_descriptor", (cls, name)
        assert "__dict__" in cls.__slots__ and "__weakref__" in cls.__slots__
    c = readcache.ReadCache(1 << 20)
    c.anything = 1      # an instance attribute (a test's monkeypatch) still works
    assert c.anything == 1


@needs_compiled
def test_first_page_counts_as_the_twin(tmp_path):
    """Through a real store: the hit and miss counters the compiled page
    bumps in place are the ones ReadCache.answer counts."""
    from stemedb import open_store
    s = open_store(str(tmp_path / "s"), durability="none")
    try:
        for i in range(3):
            s.put({"concept_path": "a/b", "predicate": "p", "value": i,
                   "source": "t", "confidence": 0.5})
        c = s.reader.cache
        c.answer_hits = c.answer_misses = 0
        first = s.query("a/b", predicate="p")
        again = s.query("a/b", predicate="p")
        assert first == again
        assert (c.answer_misses, c.answer_hits) == (1, 1)
        c.answer_hits = 2**65       # a large count: still +1
        s.query("a/b", predicate="p")
        assert c.answer_hits == 2**65 + 1
    finally:
        s.close()
