"""Where the run settings come from: defaults, a JSON file and the command line.

Precedence: command line > ``--config`` file > defaults. The JSON file takes the long
option names (``models``, ``template``, ``unix``, ``address``, ``port``, ...; dashes or
underscores) and also the keys of deepmd-kit's ``dp_ipi`` input, so a ``dp_ipi`` user can
switch with the file they have:

===============  ==============================================================
``dp_ipi`` key   meaning here
===============  ==============================================================
``graph_file``   ``models`` (one model)
``coord_file``   ``template``
``use_unix``     ``unix``
``host``         ``address`` (the UNIX socket name when ``use_unix`` is true)
``port``         ``port``
``atom_type``    ``{"label": type index}``: template labels -> model 0's types
``verbose``      ``verbose`` (true: debug output)
===============  ==============================================================

Relative paths in the file are taken relative to the current directory, as ``dp_ipi``
does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..arguments import folded, setting_fields
from ..errors import ConfigError
from .config import RunConfig

_DP_IPI_KEYS = {
    "graph_file": "models",
    "coord_file": "template",
    "use_unix": "unix",
    "host": "address",
}
#: every setting, a group's (DeviationKind's) fields in its place: the options and keys
SETTINGS = {f.name: f for f in setting_fields(RunConfig)}
_FIELDS = set(SETTINGS)
_ANNOTATIONS = {name: str(f.type) for name, f in SETTINGS.items()}  # as written (postponed annotations)


#: fields that only a file sets (no command-line option): dp_ipi's atom_type
FILE_ONLY = frozenset({"atom_type"})


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


#: how a JSON value of each setting's type is read: (accepts, converts, what it must be). One
#: entry per annotation of the settings; a setting whose annotation is not here fails the test
#: that every field has a JSON type (tests/unit/run/test_config_template.py).
JSON_TYPES: dict[str, tuple[Any, Any, str]] = {
    "bool": (lambda v: isinstance(v, bool), bool, "true or false"),
    "bool | None": (lambda v: v is None or isinstance(v, bool), lambda v: v, "true, false or null"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), int, "an integer"),
    "int | None": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)), lambda v: v, "an integer"),
    "float": (_number, float, "a number"),
    "float | None": (lambda v: v is None or _number(v), lambda v: None if v is None else float(v), "a number or null"),
    "str": (lambda v: isinstance(v, str), str, "a string"),
    "str | None": (lambda v: v is None or isinstance(v, str), lambda v: v, "a string or null"),
    "tuple[str, ...]": (
        lambda v: isinstance(v, str) or _strings(v),
        lambda v: (v,) if isinstance(v, str) else tuple(v),
        "a file name or a non-empty list of file names",
    ),
    "tuple[str, ...] | None": (
        lambda v: v is None or (isinstance(v, list) and all(isinstance(x, str) for x in v)),
        lambda v: None if v is None else tuple(v),
        "a list of element names",
    ),
    "str | tuple[str, ...]": (
        lambda v: isinstance(v, str) or _strings(v),
        lambda v: v if isinstance(v, str) else v[0] if len(v) == 1 else tuple(v),
        "a string or a non-empty list of strings",
    ),
    "tuple[float, ...] | None": (
        lambda v: v is None or _number(v) or (isinstance(v, list) and bool(v) and all(map(_number, v))),
        lambda v: None if v is None else (float(v),) if _number(v) else tuple(map(float, v)),
        "a number or a non-empty list of numbers",
    ),
    "Mapping[str, int] | None": (
        lambda v: (
            v is None
            or (
                isinstance(v, dict)
                and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v.values())
            )
        ),
        lambda v: None if v is None else dict(v),
        'an object {"label": type index >= 0}',
    ),
}
#: per field, where it reads more than its type says: verbose also takes dp_ipi's boolean
_JSON_EXTRA = {"verbose": (lambda v: isinstance(v, bool), lambda v: 1 if v else 0)}


def _coerce(name: str, value: Any, source: str) -> Any:
    """Check the JSON type of one setting and convert it to the record's type."""
    extra = _JSON_EXTRA.get(name)
    if extra is not None and extra[0](value):
        return extra[1](value)
    accepts, converts, expected = JSON_TYPES[_ANNOTATIONS[name]]
    if not accepts(value):
        raise ConfigError(f"{source}: {name!r} must be {expected}, got {value!r}")
    return converts(value)


def settings_from_options(args: Any) -> dict[str, Any]:
    """The command line's values of the settings (argparse ``dest`` = setting name),
    lists as tuples, one --address as a string; None where an option was not given."""
    settings: dict[str, Any] = {}
    for name in SETTINGS:
        if name in FILE_ONLY:
            continue
        value = getattr(args, name)
        if isinstance(value, list):
            value = value[0] if name == "address" and len(value) == 1 else tuple(value)
        settings[name] = value
    return settings


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON settings file into {field name: value}; unknown keys are an error."""
    path = Path(path)
    source = f"config file {path}"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{source}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a JSON object at the top level")
    settings: dict[str, Any] = {}
    unknown = []
    for key, value in data.items():
        name = key.replace("-", "_")
        name = _DP_IPI_KEYS.get(name, name)
        if name not in _FIELDS:
            unknown.append(key)
            continue
        settings[name] = _coerce(name, value, source)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(_FIELDS | set(_DP_IPI_KEYS)))}"
        )
    return settings


def build_config(file_settings: Mapping[str, Any], cli_settings: Mapping[str, Any]) -> RunConfig:
    """Merge: defaults, then the file, then every command-line value that was given (not None)."""
    merged = dict(file_settings)
    merged.update({k: v for k, v in cli_settings.items() if v is not None})
    return replace(RunConfig(), **folded(RunConfig, merged)).validated()
