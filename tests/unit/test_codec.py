import dataclasses
import enum
import json
import math
import uuid
from collections import namedtuple
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pydantic
import pytest

from sayiir_nb import CodecError, JsonCodec

codec = JsonCodec()


@dataclasses.dataclass(frozen=True)
class Recipient:
    email: str
    tags: tuple[str, ...]
    joined: date


@dataclasses.dataclass
class WithDerived:
    a: int
    b: int = dataclasses.field(init=False)

    def __post_init__(self):
        self.b = self.a * 2


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Message(pydantic.BaseModel):
    to: str
    sent_at: datetime
    amount: Decimal
    labels: set[str]


Point = namedtuple("Point", "x y")


def roundtrip(value):
    text = codec.encode(value)
    json.loads(text)  # standard JSON
    assert "NaN" not in text
    assert "Infinity" not in text
    return codec.decode(text)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        3,
        10**30,
        "héllo",
        1.5,
        [1, [2, 3]],
        {"a": 1, "b": [1, 2]},
        (1, 2, (3, 4)),
        {1, 2, 3},
        frozenset({"a", "b"}),
        {1: "one", (2, 3): "pair", "$": "dollar key"},
        b"\x00\xffbytes",
        bytearray(b"abc"),
        date(2026, 12, 3),
        time(13, 45, 1, 500),
        timedelta(days=1, seconds=5, microseconds=7),
        Decimal("0.1000000000000000000000001"),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        Path("/tmp/x.txt"),
        Colour.BLUE,
        Point(1, (2, 3)),
    ],
)
def test_roundtrip_keeps_value_and_type(value):
    back = roundtrip(value)
    assert back == value
    assert type(back) is type(value)


def test_nested_types_survive():
    value = {"rows": [(1, "a"), (2, "b")], "when": {date(2026, 1, 1)}}
    back = roundtrip(value)
    assert back == value
    assert type(back["rows"][0]) is tuple


def test_dict_order_kept():
    value = {"z": 1, "a": 2, "m": 3}
    assert list(roundtrip(value)) == ["z", "a", "m"]


@pytest.mark.parametrize("special", [math.nan, math.inf, -math.inf])
def test_nan_and_infinities(special):
    back = roundtrip([special])[0]
    assert type(back) is float
    if math.isnan(special):
        assert math.isnan(back)
    else:
        assert back == special


def test_datetimes_keep_their_time_zone():
    paris = datetime(2026, 3, 29, 1, 30, tzinfo=ZoneInfo("Europe/Paris"))
    fixed = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    utc = datetime(2026, 1, 1, tzinfo=UTC)
    naive = datetime(2026, 1, 1, 8, 0)
    for value in (paris, fixed, utc, naive):
        back = roundtrip(value)
        assert back == value
        assert back.utcoffset() == value.utcoffset()
    assert roundtrip(paris).tzinfo == ZoneInfo("Europe/Paris")


def test_dataclasses_and_pydantic_models():
    recipient = Recipient("ana@example.com", ("vip",), date(2024, 5, 1))
    assert roundtrip(recipient) == recipient
    assert type(roundtrip([recipient])[0].tags) is tuple
    derived = roundtrip(WithDerived(3))
    assert (derived.a, derived.b) == (3, 6)
    message = Message(
        to="x@example.com",
        sent_at=datetime(2026, 1, 1, tzinfo=UTC),
        amount=Decimal("9.99"),
        labels={"a", "b"},
    )
    back = roundtrip(message)
    assert back == message
    assert type(back.amount) is Decimal


def test_dataframe_keeps_dtypes_and_index():
    frame = pd.DataFrame(
        {
            "i": pd.array([1, None, 3], dtype="Int64"),
            "f": [1.5, math.nan, 3.0],
            "s": ["a", "b", "c"],
            "cat": pd.Categorical(["x", "y", "x"]),
            "when": pd.to_datetime(
                ["2026-01-01", "2026-01-02", "2026-01-03"]
            ).tz_localize("Europe/Paris"),
            "flag": [True, False, True],
        },
        index=pd.Index([10, 20, 30], name="id"),
    )
    back = roundtrip(frame)
    pd.testing.assert_frame_equal(back, frame)
    assert dict(back.dtypes) == dict(frame.dtypes)


def test_series_and_numpy():
    series = pd.Series([1, 2, 3], name="n", dtype="int32")
    pd.testing.assert_series_equal(roundtrip(series), series)
    unnamed = pd.Series([1.0, 2.0])
    pd.testing.assert_series_equal(roundtrip(unnamed), unnamed)
    array = np.arange(6, dtype="float32").reshape(2, 3)
    back = roundtrip(array)
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)
    scalar = np.int64(7)
    assert type(roundtrip(scalar)) is np.int64


def test_refusal_names_type_and_path():
    class Opaque:
        pass

    with pytest.raises(CodecError) as info:
        codec.encode({"rows": [1, {"conn": Opaque()}]})
    error = info.value
    assert error.path == "['rows'][1]['conn']"
    assert "Opaque" in error.type_name
    assert "['rows'][1]['conn']" in str(error)


def test_local_dataclass_is_refused_with_advice():
    @dataclasses.dataclass
    class Local:
        x: int

    with pytest.raises(CodecError, match="module level"):
        codec.encode([Local(1)])


def test_sets_encode_the_same_whatever_the_order():
    assert codec.encode({"b", "a", "c"}) == codec.encode({"c", "b", "a"})


def test_unknown_class_on_decode_is_a_clear_error():
    text = json.dumps({"$": "dataclass", "cls": "nowhere.module:Thing", "v": {}})
    with pytest.raises(CodecError, match="nowhere.module:Thing"):
        codec.decode(text)


class Aliased(pydantic.BaseModel):
    user_id: int = pydantic.Field(alias="userId")


class Loose(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    a: int


@dataclasses.dataclass
class Doubles:
    x: int

    def __post_init__(self):
        self.x *= 2


def test_refusals_for_cycles_depth_and_huge_ints():
    cyclic: list = []
    cyclic.append(cyclic)
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    for value, fragment in (
        (cyclic, "cycle"),
        (deep, "nested too deeply"),
        (10**5000, "digits"),
    ):
        with pytest.raises(CodecError, match=fragment):
            codec.encode(value)


def test_numpy_values_that_item_cannot_represent():
    for value in (np.longdouble(1.5), np.datetime64("2020-01-01T00:00:00.000000001")):
        back = roundtrip(value)
        assert back == value
        assert back.dtype == value.dtype
    structured = np.array([(1, 2.0)], dtype=[("a", "<i4"), ("b", "<f8")])
    back = roundtrip(structured)
    assert back.dtype == structured.dtype
    assert back.tolist() == structured.tolist()
    with pytest.raises(CodecError, match="masked"):
        codec.encode(np.ma.masked_array([1, 2], mask=[0, 1]))


def test_paths_keep_their_flavour():
    from pathlib import PurePosixPath, PureWindowsPath

    for value in (PurePosixPath("/a/b"), PureWindowsPath("C:/x")):
        back = roundtrip(value)
        assert back == value
        assert type(back) is type(value)


def test_series_name_keeps_its_type():
    series = pd.Series([1, 2], name=0)
    assert roundtrip(series).name == 0


def test_models_are_rebuilt_without_running_init_again():
    assert roundtrip(Doubles(3)).x == 6
    aliased = Aliased(userId=7)
    assert roundtrip(aliased) == aliased
    loose = Loose(a=1, b=2)
    back = roundtrip(loose)
    assert back == loose
    assert back.b == 2


def test_named_offsets_and_fold():
    named = datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=5), "X"))
    assert roundtrip(named).tzname() == "X"
    folded = datetime(2026, 10, 25, 2, 30, fold=1)
    assert roundtrip(folded).fold == 1
