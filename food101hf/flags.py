"""A dataclass as command-line flags and YAML presets: the generic half of `food101hf.config`.

Every field is a flag (``image_size`` -> ``--image-size``; booleans get ``--x/--no-x``), declared with `option`
(its help text and default). Precedence, lowest first: the dataclass defaults, a YAML preset
(``--config FILE.yaml``, read with ``yaml.safe_load``), then the flags given. Unknown YAML keys and unknown flags
fail with the valid ones named; a value is converted to the field's type or refused naming the flag. Light
imports only (argparse; yaml once a preset is read), so that --help answers before torch loads.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from dataclasses import field
from pathlib import Path

from .cli import ArgumentParser
from .errors import ConfigError


def option(text: str, default, required: bool = False):
    """A dataclass field that is a flag: `text` is its help; `required` lists it first and leaves the default
    out of the help."""
    return field(default=default, metadata={"help": text, "required": required})


def _field_types(cls) -> dict[str, type]:
    """Each field's type, with `X | None` unwrapped to X."""
    types_ = {}
    for name, hint in typing.get_type_hints(cls).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        types_[name] = args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint
    return types_


def _is_optional(cls, name: str) -> bool:
    return type(None) in typing.get_args(typing.get_type_hints(cls)[name])


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _coerce(cls, name: str, value):
    """Convert a YAML value or a flag's string to the field's type, or fail naming the field."""
    kind = _field_types(cls)[name]
    spelled_none = isinstance(value, str) and value.lower() in ("none", "null")
    if value is None or (spelled_none and _is_optional(cls, name)):
        if _is_optional(cls, name):
            return None
        raise ConfigError(f"{_flag(name)} cannot be empty")
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{_flag(name)} must be true or false, got {value!r}")
    try:
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return kind(value)
    except ValueError:
        raise ConfigError(f"{_flag(name)} must be {kind.__name__}, got {value!r}") from None


def _flag_help(f: dataclasses.Field, is_bool: bool) -> str:
    """The field's help, and its default once: as the flag that is on for a boolean; a None default is explained
    by the help text itself ("default: all")."""
    text = f.metadata.get("help", "")
    if f.metadata.get("required") or f.default is None:
        return text
    default = ("--" if f.default else "--no-") + f.name.replace("_", "-") if is_bool else f.default
    return f"{text} (default: {default})"


def build_parser(cls, description: str | None = None, prog: str | None = None) -> ArgumentParser:
    """One flag per dataclass field (but `cls.NOT_FLAGS`), required ones listed first. Defaults are suppressed so
    that only flags actually given override the preset."""
    field_types = _field_types(cls)
    fields = [f for f in dataclasses.fields(cls) if f.name not in cls.NOT_FLAGS]
    usage = " ".join(["%(prog)s"] + [f"--{f.name.replace('_', '-')} {f.name.upper()}" for f in fields
                                     if f.metadata.get("required")] + ["[--config FILE.yaml] [options]"])
    parser = ArgumentParser(prog=prog, usage=usage, description=description, argument_default=argparse.SUPPRESS)
    required, options = parser.required, parser.options
    options.add_argument("--config", metavar="FILE.yaml", help="YAML preset; flags given here override it")
    for f in sorted(fields, key=lambda f: not f.metadata.get("required")):
        group = required if f.metadata.get("required") else options
        flag, is_bool = "--" + f.name.replace("_", "-"), field_types[f.name] is bool
        if is_bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                               help=_flag_help(f, is_bool))
        else:
            group.add_argument(flag, dest=f.name, metavar=field_types[f.name].__name__.upper(),
                               help=_flag_help(f, is_bool))
    return parser


def load_yaml(cls, path: str | Path) -> dict:
    """Read a preset and check its keys (dashes or underscores) against the dataclass. A folder written as
    ``{path: P}`` (how a run's train_config.yaml records one, `outputs.record_folders`) is P from the preset's own
    folder; ``{name: N}`` (recorded by name only) is N. Raises ConfigError for a file that cannot be read or
    parsed, or has unknown keys."""
    import yaml  # here: --help and the flags answer without it (~0.1 s of imports)

    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"--config: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a preset must be a mapping of config keys to values")
    values = {str(k).replace("-", "_"): v for k, v in raw.items()}
    valid = [f.name for f in dataclasses.fields(cls)]  # NOT_FLAGS too: a saved config records them
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ConfigError(f"{path}: unknown config key(s) {', '.join(unknown)}. Valid keys: {', '.join(valid)}")
    for key, value in values.items():  # a folder as a recorded recipe names it
        if isinstance(value, dict) and set(value) in ({"path"}, {"name"}):
            values[key] = str(Path(path).parent / value["path"]) if "path" in value else value["name"]
    return values


def parse(cls, argv: list[str] | None = None, description: str | None = None,
          prog: str | None = None) -> tuple[object, set[str], set[str]]:
    """(the dataclass built from defaults < preset < flags, the fields given as flags, the fields the preset set).
    Raises ConfigError naming the key or flag. A field in `cls.NOT_FLAGS` (name -> why) given as a flag is refused
    with its reason; `--help` prints the flags and exits."""
    parser = build_parser(cls, description, prog)
    for name, why in cls.NOT_FLAGS.items():
        flags = {_flag(name), "--no-" + name.replace("_", "-")}
        if flags & {arg.split("=")[0] for arg in (sys.argv[1:] if argv is None else argv)}:
            raise ConfigError(f"{_flag(name)}: {parser.prog} {why}")
    given = vars(parser.parse_args(argv))
    preset = load_yaml(cls, given.pop("config")) if "config" in given else {}
    values = preset | given
    return cls(**{name: _coerce(cls, name, value) for name, value in values.items()}), set(given), set(preset)
