"""Codecs turn task outputs and run inputs into stored text and back.

The default, :class:`JsonCodec`, writes standard JSON (no bare ``NaN``) and
never executes stored bytes. Types JSON lacks are written as small tagged
objects ``{"$": "<tag>", ...}`` so that a value read back after a resume is
equal to the live one, with the same types.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import importlib
import io
import json
import math
import pathlib
import uuid
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

from .errors import CodecError

TAG = "$"
_SCALARS = (str, int, bool, type(None))
_PATHS = {
    name: name
    for name in (
        "Path",
        "PosixPath",
        "WindowsPath",
        "PurePath",
        "PurePosixPath",
        "PureWindowsPath",
    )
}


@runtime_checkable
class Codec(Protocol):
    """What a backend needs to store values: text out, equal value back."""

    name: str

    def encode(self, value: Any) -> str:
        """Encode ``value``; raise :class:`CodecError` naming where it failed."""
        ...

    def decode(self, text: str) -> Any:
        """Decode text written by :meth:`encode`."""
        ...


class _Refused(Exception):
    """Internal: carries the path (built while unwinding) of a refused value."""

    def __init__(self, reason: str, value: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.value = value
        self.segments: list[str] = []


class JsonCodec:
    """The default codec: tagged, standard JSON.

    Round-trips ``None``, ``bool``, ``int``, ``float`` (NaN and infinities
    included), ``str``, ``list``, ``dict`` (any hashable encodable keys, in
    order), ``tuple``, ``set``, ``frozenset``, ``bytes``, ``datetime`` (time
    zone kept, including named zones), ``date``, ``time``, ``timedelta``,
    ``Decimal``, ``UUID``, ``pathlib`` paths, enums, dataclasses, pydantic
    models, numpy scalars and arrays, and pandas ``DataFrame`` and ``Series``
    with their dtypes (through Arrow; needs ``pyarrow``).

    Dataclasses, enums and pydantic models are rebuilt by importing their
    class by module and name, so they must be defined at module level (a
    notebook's top level counts) and importable when the value is read back.
    They are rebuilt field by field, without calling ``__init__`` again (as
    pickle does). Anything else is refused with a :class:`CodecError` naming
    the type and where in the value it is; so are values nested more deeply
    than Python's recursion limit, values that contain themselves, masked
    numpy arrays and arrays of Python objects.
    """

    name = "json"

    def encode(self, value: Any) -> str:
        kind = type(value)
        try:
            if kind is int:
                return str(value)
            if kind in _SCALARS:
                return json.dumps(value, ensure_ascii=False)
            tree = _encode(value)
            return json.dumps(
                tree, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            )
        except RecursionError:
            raise CodecError(
                "cannot store the value: it is nested too deeply, or it contains "
                "itself (a cycle). Return a flatter value.",
                reason="it is nested too deeply, or contains itself (a cycle).",
            ) from None
        except (ValueError, OverflowError) as error:
            raise CodecError(
                f"cannot store the value: {error}", reason=f"{error}."
            ) from None
        except _Refused as refused:
            path = "".join(reversed(refused.segments))
            type_name = _type_name(refused.value)
            where = f" at {path}" if path else ""
            raise CodecError(
                f"cannot store a value of type {type_name}{where}: {refused.reason}",
                path=path,
                type_name=type_name,
                reason=refused.reason,
            ) from None

    def decode(self, text: str) -> Any:
        try:
            tree = json.loads(text)
        except (TypeError, ValueError) as error:
            raise CodecError(f"stored value is not valid JSON: {error}") from error
        if not isinstance(tree, dict | list):
            return tree
        try:
            return _decode(tree)
        except CodecError:
            raise
        except Exception as error:
            raise CodecError(
                f"a stored value cannot be rebuilt: {type(error).__name__}: {error}",
                reason=f"it cannot be rebuilt ({type(error).__name__}: {error}).",
            ) from error


def _encode(value: Any) -> Any:
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is float:
        return value if math.isfinite(value) else {TAG: "float", "v": repr(value)}
    if kind is list:
        return _encode_items(value, "[{}]")
    if kind is dict:
        return _encode_dict(value)
    encoder = _ENCODERS.get(kind)
    if encoder is not None:
        return encoder(value)
    return _encode_other(value)


def _encode_items(items: Any, segment: str) -> list[Any]:
    out = []
    for index, item in enumerate(items):
        try:
            out.append(_encode(item))
        except _Refused as refused:
            refused.segments.append(segment.format(index))
            raise
    return out


def _encode_dict(value: dict[Any, Any]) -> Any:
    if all(type(key) is str for key in value) and TAG not in value:
        out = {}
        for key, item in value.items():
            try:
                out[key] = _encode(item)
            except _Refused as refused:
                refused.segments.append(f"[{key!r}]")
                raise
        return out
    pairs = []
    for key, item in value.items():
        try:
            pairs.append([_encode(key), _encode(item)])
        except _Refused as refused:
            refused.segments.append(f"[{key!r}]")
            raise
    return {TAG: "dict", "v": pairs}


def _encode_set(value: set[Any] | frozenset[Any]) -> Any:
    try:
        items = [_encode(item) for item in value]
    except _Refused as refused:
        refused.segments.append("{item}")
        raise
    items.sort(key=lambda item: json.dumps(item, sort_keys=True))
    return {TAG: "frozenset" if isinstance(value, frozenset) else "set", "v": items}


def _encode_datetime(value: datetime) -> Any:
    out: dict[str, Any] = {TAG: "datetime", "v": value.isoformat()}
    zone = value.tzinfo
    if isinstance(zone, ZoneInfo):
        out["tz"] = zone.key
    elif isinstance(zone, timezone) and zone.tzname(None) != _plain_name(zone):
        out["tzname"] = zone.tzname(None)
    elif zone is not None and not isinstance(zone, timezone):
        raise _Refused(
            f"time zone {zone!r} is not a ZoneInfo or a fixed offset; use "
            "zoneinfo.ZoneInfo for named zones.",
            value,
        )
    if value.fold:
        out["fold"] = 1
    return out


def _encode_other(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return {TAG: "enum", "cls": _class_path(value), "v": _encode(value.value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _encode_dataclass(value)
    if _is_pydantic(value):
        return _encode_pydantic(value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {
            TAG: "namedtuple",
            "cls": _class_path(value),
            "v": _encode_items(value, "[{}]"),
        }
    if isinstance(value, pathlib.PurePath) and type(value).__name__ in _PATHS:
        return {TAG: "path", "cls": type(value).__name__, "v": str(value)}
    module = type(value).__module__.split(".")[0]
    if module == "pandas":
        return _encode_pandas(value)
    if module == "numpy":
        return _encode_numpy(value)
    for base, encoder in _ENCODERS.items():
        if isinstance(value, base):
            return encoder(value)
    raise _Refused(
        "the JSON codec does not know this type. Use built-in types, "
        "dataclasses, pydantic models or DataFrames, or pass a codec that "
        "handles it.",
        value,
    )


def _encode_dataclass(value: Any) -> Any:
    names = [f.name for f in dataclasses.fields(value)]
    return _encode_fields(value, "dataclass", names)


def _encode_fields(value: Any, tag: str, names: Any) -> Any:
    fields = {}
    for name in names:
        try:
            fields[name] = _encode(getattr(value, name))
        except _Refused as refused:
            refused.segments.append(f".{name}")
            raise
    return {TAG: tag, "cls": _class_path(value), "v": fields}


def _encode_pydantic(value: Any) -> Any:
    out = _encode_fields(value, "pydantic", list(type(value).model_fields))
    extra = getattr(value, "__pydantic_extra__", None) or {}
    if extra:
        try:
            out["extra"] = _encode_dict(dict(extra))
        except _Refused as refused:
            refused.segments.append(".__pydantic_extra__")
            raise
    out["set"] = sorted(value.model_fields_set)
    return out


def _encode_pandas(value: Any) -> Any:
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        return {TAG: "dataframe", "v": _arrow_bytes(value)}
    if isinstance(value, pd.Series):
        try:
            name = _encode(value.name)
        except _Refused as refused:
            refused.segments.append(".name")
            raise
        frame = value.to_frame(name="__series__")
        return {TAG: "series", "name": name, "v": _arrow_bytes(frame)}
    if isinstance(value, pd.Timestamp):
        return {TAG: "timestamp", "v": value.isoformat(), "tz": _tz_name(value.tzinfo)}
    raise _Refused(
        "of the pandas types only DataFrame, Series and Timestamp are stored.", value
    )


def _arrow_bytes(frame: Any) -> str:
    try:
        import pyarrow as pa
    except ImportError:
        raise _Refused(
            "storing DataFrames needs pyarrow: pip install 'sayiir-nb[arrow]'.", frame
        ) from None
    try:
        table = pa.Table.from_pandas(frame, preserve_index=True)
    except (pa.ArrowException, TypeError, ValueError) as error:
        raise _Refused(f"Arrow cannot hold this DataFrame ({error}).", frame) from None
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return base64.b64encode(sink.getvalue()).decode("ascii")


def _encode_numpy(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.ma.MaskedArray):
        raise _Refused("masked arrays cannot be stored; store data and mask.", value)
    if value.dtype.hasobject:
        raise _Refused(
            "numpy values holding Python objects cannot be stored; use a list.", value
        )
    descr = np.lib.format.dtype_to_descr(value.dtype)
    data = base64.b64encode(np.ascontiguousarray(value).tobytes()).decode("ascii")
    if isinstance(value, np.generic):
        return {TAG: "np", "dtype": descr, "v": data}
    if isinstance(value, np.ndarray) and type(value) is np.ndarray:
        return {TAG: "ndarray", "dtype": descr, "shape": list(value.shape), "v": data}
    raise _Refused("of numpy's types only arrays and scalars are stored.", value)


def _encode_bytes(value: bytes | bytearray) -> Any:
    tag = "bytearray" if isinstance(value, bytearray) else "bytes"
    return {TAG: tag, "v": base64.b64encode(value).decode("ascii")}


_ENCODERS: dict[type, Callable[[Any], Any]] = {
    tuple: lambda v: {TAG: "tuple", "v": _encode_items(v, "[{}]")},
    set: _encode_set,
    frozenset: _encode_set,
    bytes: _encode_bytes,
    bytearray: _encode_bytes,
    datetime: _encode_datetime,
    date: lambda v: {TAG: "date", "v": v.isoformat()},
    time: lambda v: {TAG: "time", "v": v.isoformat(), "tz": _tz_name(v.tzinfo)},
    timedelta: lambda v: {TAG: "timedelta", "v": [v.days, v.seconds, v.microseconds]},
    Decimal: lambda v: {TAG: "decimal", "v": str(v)},
    uuid.UUID: lambda v: {TAG: "uuid", "v": str(v)},
}


def _decode(tree: Any) -> Any:
    kind = type(tree)
    if kind is list:
        return [_decode(item) for item in tree]
    if kind is dict:
        tag = tree.get(TAG)
        if tag is None:
            return {key: _decode(item) for key, item in tree.items()}
        decoder = _DECODERS.get(tag)
        if decoder is None:
            raise CodecError(f"stored value has an unknown tag {tag!r}.")
        return decoder(tree)
    return tree


def _plain_name(zone: timezone) -> str | None:
    offset = zone.utcoffset(None)
    return timezone(offset).tzname(None) if offset is not None else None


def _decode_datetime(tree: dict[str, Any]) -> datetime:
    value = datetime.fromisoformat(tree["v"])
    if tree.get("tz"):
        value = value.astimezone(ZoneInfo(tree["tz"]))
    elif tree.get("tzname") and value.tzinfo is not None:
        offset = value.tzinfo.utcoffset(value)
        assert offset is not None
        value = value.replace(tzinfo=timezone(offset, tree["tzname"]))
    return value.replace(fold=1) if tree.get("fold") else value


def _decode_dataclass(tree: dict[str, Any]) -> Any:
    """Rebuild the instance field by field, as pickle does: ``__init__`` and
    ``__post_init__`` already ran when it was made, and must not change the
    stored values a second time."""
    cls = _import_class(tree["cls"], dataclasses.is_dataclass)
    obj = cls.__new__(cls)
    for name, item in tree["v"].items():
        object.__setattr__(obj, name, _decode(item))
    return obj


def _decode_pydantic(tree: dict[str, Any]) -> Any:
    """Rebuild without validating again (the values were valid when stored,
    and validation could convert them); extra fields come back too."""
    cls = _import_class(tree["cls"], lambda c: hasattr(c, "model_construct"))
    values = {name: _decode(item) for name, item in tree["v"].items()}
    if "extra" in tree:
        values.update(_decode(tree["extra"]))
    return cls.model_construct(_fields_set=set(tree.get("set", values)), **values)


def _decode_frame(text: str) -> Any:
    import pyarrow as pa

    with pa.ipc.open_stream(base64.b64decode(text)) as reader:
        return reader.read_all().to_pandas()


def _decode_series(tree: dict[str, Any]) -> Any:
    frame = _decode_frame(tree["v"])
    return frame.iloc[:, 0].rename(_decode(tree["name"]))


def _numpy_dtype(descr: Any) -> Any:
    """The dtype from its stored description (lists where numpy had tuples)."""
    import numpy as np

    if isinstance(descr, list):
        descr = [tuple(_nested_tuples(part) for part in field) for field in descr]
    return np.lib.format.descr_to_dtype(descr)


def _nested_tuples(part: Any) -> Any:
    if isinstance(part, list):
        if part and all(isinstance(item, list) for item in part):
            return [tuple(_nested_tuples(x) for x in item) for item in part]
        return tuple(part)
    return part


def _decode_numpy_scalar(tree: dict[str, Any]) -> Any:
    import numpy as np

    data = base64.b64decode(tree["v"])
    return np.frombuffer(data, dtype=_numpy_dtype(tree["dtype"]))[0]


def _decode_ndarray(tree: dict[str, Any]) -> Any:
    import numpy as np

    data = base64.b64decode(tree["v"])
    dtype = _numpy_dtype(tree["dtype"])
    return np.frombuffer(data, dtype=dtype).reshape(tree["shape"]).copy()


def _decode_timestamp(tree: dict[str, Any]) -> Any:
    import pandas as pd

    stamp = pd.Timestamp(tree["v"])
    return stamp.tz_convert(tree["tz"]) if tree.get("tz") else stamp


def _decode_time(tree: dict[str, Any]) -> time:
    value = time.fromisoformat(tree["v"])
    zone = tree.get("tz")
    return value.replace(tzinfo=ZoneInfo(zone)) if zone else value


_DECODERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "float": lambda t: float(t["v"]),
    "dict": lambda t: {_decode(k): _decode(v) for k, v in t["v"]},
    "tuple": lambda t: tuple(_decode(item) for item in t["v"]),
    "set": lambda t: {_decode(item) for item in t["v"]},
    "frozenset": lambda t: frozenset(_decode(item) for item in t["v"]),
    "bytes": lambda t: base64.b64decode(t["v"]),
    "bytearray": lambda t: bytearray(base64.b64decode(t["v"])),
    "datetime": _decode_datetime,
    "date": lambda t: date.fromisoformat(t["v"]),
    "time": _decode_time,
    "timedelta": lambda t: timedelta(
        days=t["v"][0], seconds=t["v"][1], microseconds=t["v"][2]
    ),
    "decimal": lambda t: Decimal(t["v"]),
    "uuid": lambda t: uuid.UUID(t["v"]),
    "path": lambda t: getattr(pathlib, _PATHS[t.get("cls", "Path")])(t["v"]),
    "enum": lambda t: _import_class(t["cls"], _is_enum)(_decode(t["v"])),
    "namedtuple": lambda t: _import_class(t["cls"], _is_namedtuple)(*_decode(t["v"])),
    "dataclass": _decode_dataclass,
    "pydantic": _decode_pydantic,
    "dataframe": lambda t: _decode_frame(t["v"]),
    "series": _decode_series,
    "timestamp": _decode_timestamp,
    "np": _decode_numpy_scalar,
    "ndarray": _decode_ndarray,
}


def _is_enum(cls: type) -> bool:
    return isinstance(cls, type) and issubclass(cls, enum.Enum)


def _is_namedtuple(cls: type) -> bool:
    return isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")


def _is_pydantic(value: Any) -> bool:
    return hasattr(type(value), "model_fields") and hasattr(value, "model_dump")


def _class_path(value: Any) -> str:
    cls = type(value)
    if "<locals>" in cls.__qualname__:
        raise _Refused(
            f"class {cls.__qualname__} is defined inside a function, so it cannot "
            "be rebuilt when the value is read back; define it at module level.",
            value,
        )
    return f"{cls.__module__}:{cls.__qualname__}"


def _import_class(path: str, check: Callable[[Any], bool]) -> Any:
    module_name, _, qualname = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as error:
        raise CodecError(
            f"cannot rebuild a stored {path}: the class is not importable here "
            f"({error}). Import or define it before reading this value.",
            type_name=path,
        ) from error
    if not check(obj):
        raise CodecError(f"stored class {path} is not of the kind it was stored as.")
    return obj


def _tz_name(tz: Any) -> str | None:
    """The zone's name when it has one; fixed offsets live in the ISO text."""
    key = getattr(tz, "key", None) or getattr(tz, "zone", None)
    return str(key) if key else None


def _type_name(value: Any) -> str:
    cls = type(value)
    return (
        cls.__qualname__
        if cls.__module__ == "builtins"
        else f"{cls.__module__}.{cls.__qualname__}"
    )
