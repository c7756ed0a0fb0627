"""JSON → manifest dataclasses with every field type-checked, and the paths a manifest names
kept inside its folder.

``parse`` walks the dataclass annotations (``int``, ``float``, ``str``, ``bool``, ``list[X]``,
``dict[str, X]``, ``X | None``, nested dataclasses): a wrong type raises a ``ManifestError``
that names the field (``manifest.image.preprocess.size[0]``), so it never surfaces later as an
``AttributeError`` deep in the runtime. Unknown keys are ignored: a newer manifest of the same
version stays readable.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path, PurePosixPath, PureWindowsPath

from .errors import ManifestError

_FIX = "; re-export the model"


def parse(cls, data, where: str):
    """``data`` (decoded JSON) → an instance of dataclass ``cls``, checked field by field."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ManifestError(f"{where} must be an object ({cls.__name__}), got {_kind(data)}{_FIX}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ManifestError(f"{where}.{f.name} is missing{_FIX}")
    try:
        return cls(**kwargs)
    except ManifestError:
        raise
    except (ValueError, TypeError, KeyError) as e:  # a value the dataclass's own checks refuse
        raise ManifestError(f"{where}: {e}{_FIX}") from None


def _convert(tp, value, where: str):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _convert(options[0], value, where)
        for option in options:  # int | str …: the first that fits
            try:
                return _convert(option, value, where)
            except ManifestError:
                pass
        raise ManifestError(f"{where} must be {' or '.join(_name(o) for o in options)}, got {_kind(value)}{_FIX}")
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, where)
    if tp is typing.Any:
        return value
    if origin in (list, tuple) or tp in (list, tuple):
        _expect(isinstance(value, list), where, "a list", value)
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)] if args else value
    if origin is dict or tp is dict:
        _expect(isinstance(value, dict), where, "an object", value)
        if not args:
            return value
        return {k: _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    return _scalar(tp, value, where)


def _scalar(tp, value, where: str):
    if tp is bool:
        _expect(isinstance(value, bool), where, "true or false", value)
    elif tp is int:
        _expect(isinstance(value, int) and not isinstance(value, bool), where, "an integer", value)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        _expect(ok, where, "a finite number", value)
        return float(value)
    elif tp is str:
        _expect(isinstance(value, str), where, "a string", value)
    return value


def _expect(ok: bool, where: str, what: str, value) -> None:
    if not ok:
        raise ManifestError(f"{where} must be {what}, got {_kind(value)}{_FIX}")


def _kind(value) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"[:80]


def _name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def check_inside(root: Path, rel: str, where: str) -> Path:
    """``rel`` must be a relative path that stays inside ``root`` after symlinks are followed."""
    if not isinstance(rel, str) or not rel:
        raise ManifestError(f"{where} must be a file name inside the export folder, got {_kind(rel)}{_FIX}")
    posix, windows = PurePosixPath(rel), PureWindowsPath(rel)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or rel.startswith(("/", "\\")):
        raise ManifestError(f"{where} = {rel!r} is an absolute path; a manifest names only files inside its folder{_FIX}")
    if ".." in posix.parts or ".." in windows.parts:
        raise ManifestError(f"{where} = {rel!r} climbs out of the export folder with '..'{_FIX}")
    base = root.resolve()
    target = (root / rel).resolve()
    if target != base and base not in target.parents:
        raise ManifestError(f"{where} = {rel!r} leads outside the export folder (a symbolic link to {target}){_FIX}")
    return target
