"""What a recipe's job is told: its errors, and each argv string converted to the parameter's annotated type.

Part of the recipe runner (``orchestrator.core.runner``), apart so recipes can import the errors alone.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

from pydantic import TypeAdapter, ValidationError


class UsageError(Exception):
    """Bad input to a job: printed as one line, exit code 2. Recipes may raise it for a bad argument too."""


class RecipeError(Exception):
    """A recipe failure the recipe explains in one line (say, no checkpoint found): printed without a
    traceback, exit code 1."""


# -- values ------------------------------------------------------------------------------------------------------


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _allows_none(annotation: Any) -> bool:
    if annotation is None or annotation is type(None):
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _allows_none(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_allows_none(a) for a in typing.get_args(annotation))
    return annotation is Any


def coerce(name: str, annotation: Any, raw: str, what: str = "override") -> Any:
    """Convert one argv string to ``annotation``; UsageError naming ``name`` if it does not fit."""
    if annotation is inspect.Parameter.empty or annotation is Any or annotation is str:
        return raw
    if raw.strip().lower() in ("null", "none") and _allows_none(annotation):
        return None
    adapter = TypeAdapter(annotation)
    try:
        return adapter.validate_strings(raw)
    except ValidationError as first:
        error = first
    except Exception as e:  # a type pydantic cannot validate from strings
        raise UsageError(f"{what} {name!r}: cannot convert {raw!r} to {_type_name(annotation)} ({e})") from None
    text = raw.strip()
    if text[:1] in "[{":  # a list or a mapping, written as JSON
        try:
            return adapter.validate_json(text)
        except ValidationError:
            pass
    else:
        try:  # numbers written as floats for an int field: 2e4, 64.0
            number = float(text)
        except ValueError:
            pass
        else:
            try:
                return adapter.validate_python(number)
            except ValidationError:
                pass
    details = error.errors()
    reason = "" if details and details[0]["type"] == "literal_error" else f": {details[0]['msg'] if details else error}"
    raise UsageError(f"invalid value {raw!r} for {what} {name!r} (expected {_type_name(annotation)}){reason}") from None
