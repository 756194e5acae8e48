"""The recipe runner: run one recipe function with a nested config, the job side of the sweep.

    python -m orchestrator.run recipes.cartpole.train --args run=demo_trial_0001 \\
        --overrides trainer.optimizer.learning_rate=0.001 trainer.total_timesteps=20000
    python -m orchestrator.run recipes.cartpole.evaluate \\
        --args policy_uri=file://./train_dir/demo_trial_0001/checkpoints

A recipe is a plain function ``<module>.<function>``. Its parameters are what ``--args`` sets (``run``,
``policy_uri``, ...). At most one parameter is annotated with a pydantic model: that is the recipe's nested config,
and ``--overrides`` sets its fields by dotted path (``trainer.optimizer.learning_rate``). Every value arrives as
one inert argv string and is converted to the annotated type (``1e-3`` for a float, ``2e4`` or ``50_000`` for an
int, ``true``/``false`` for a bool, ``null`` for an optional); nothing is ever evaluated or given to a shell.
``key=value`` pairs may also come without ``--args``/``--overrides``: a parameter name sets the parameter, any
other name is a config path.

If the function returns a dict, it is printed as the job's ``SWEEP_RESULT`` line (``orchestrator.contract``).

Exit codes: 0 done; 2 bad input (unknown module, function, argument or override path, a value of the wrong type,
a malformed ``key=value``), always as one line naming what is wrong; 1 the recipe failed (its traceback, or one
line for a ``RecipeError``); anything else the recipe chose (``sys.exit``) or a signal.

This module imports pydantic but no training library, so a job starts fast; recipes import what they need.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
import pkgutil
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from pydantic import BaseModel, ValidationError

from orchestrator.core.contract import report_result
from orchestrator.core.recipe_values import RecipeError, UsageError, _type_name, coerce

PROG = "python -m orchestrator.run"
EXIT_USAGE = 2

__all__ = [
    "Recipe",
    "RecipeError",
    "UsageError",
    "check_command",
    "config_fields",
    "load_recipe",
    "main",
    "resolve_call",
]


# -- recipes and their parameters -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigField:
    """One settable leaf of a recipe's config: its dotted path, type, default and description."""

    path: str
    annotation: Any
    default: Any = None
    required: bool = False
    description: str | None = None


@dataclass
class Recipe:
    target: str
    func: Callable[..., Any]
    params: dict[str, inspect.Parameter]  # the plain parameters, set by --args
    hints: dict[str, Any]
    config_param: str | None = None  # the parameter holding the nested config
    config_cls: type[BaseModel] | None = None
    config_default: BaseModel | None = None
    var_kwargs: bool = False
    fields: dict[str, ConfigField] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """Everything a ``key=value`` may set: parameter names, then config paths."""
        return [*self.params, *self.fields]


def _model_class(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model class in ``Model`` or ``Model | None``; None for anything else."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(models) == 1:
            return _model_class(models[0])
    return None


def config_fields(model: type[BaseModel], prefix: str = "") -> dict[str, ConfigField]:
    """Every settable leaf of a config model, by dotted path (nested models are sections, not leaves)."""
    out: dict[str, ConfigField] = {}
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        sub = _model_class(info.annotation)
        if sub is not None and typing.get_origin(info.annotation) is None:
            out.update(config_fields(sub, path + "."))
            continue
        annotation: Any = info.annotation
        if info.metadata:
            annotation = typing.Annotated[(annotation, *info.metadata)]
        required = info.is_required()
        default = None if required else info.get_default(call_default_factory=True)
        out[path] = ConfigField(path, annotation, default, required, info.description)
    return out


def _nearest(word: str, candidates: list[str]) -> str | None:
    """The candidate closest to ``word``, weighing the last dotted segment (``learning_rate`` finds
    ``trainer.optimizer.learning_rate``)."""
    if not candidates:
        return None
    w = word.lower()
    tail = w.rsplit(".", 1)[-1]

    def score(candidate: str) -> float:
        c = candidate.lower()
        full = difflib.SequenceMatcher(None, w, c).ratio()
        last = difflib.SequenceMatcher(None, tail, c.rsplit(".", 1)[-1]).ratio()
        return max(full, 0.5 * full + 0.5 * last)

    return max(candidates, key=score)


def _did_you_mean(word: str, candidates: list[str]) -> str:
    best = _nearest(word, candidates)
    return f"; did you mean {best!r}?" if best is not None else ""


def _import_module(name: str) -> types.ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if missing and (name == missing or name.startswith(missing + ".")):
            parent, _, _ = missing.rpartition(".")
            siblings: list[str] = []
            try:
                if parent:
                    pkg = importlib.import_module(parent)
                    siblings = [f"{parent}.{m.name}" for m in pkgutil.iter_modules(getattr(pkg, "__path__", []))]
                else:
                    siblings = [m.name for m in pkgutil.iter_modules()]
            except Exception:  # a suggestion is a nicety, never a second failure
                siblings = []
            raise UsageError(f"unknown module {missing!r}{_did_you_mean(missing, siblings)}") from None
        raise  # the recipe module exists but one of its own imports is missing: a real failure, with traceback


def load_recipe(target: str) -> Recipe:
    """Import ``<module>.<function>`` and describe its parameters; UsageError if it is not there."""
    module_name, _, func_name = target.rpartition(".")
    if not module_name or not func_name or not all(p.isidentifier() for p in target.split(".")):
        raise UsageError(f"expected a recipe as <module>.<function> (e.g. recipes.cartpole.train), got {target!r}")
    module = _import_module(module_name)
    func = getattr(module, func_name, None)
    if func is None or not callable(func) or isinstance(func, type) or isinstance(func, types.ModuleType):
        recipes = sorted(
            n
            for n, v in vars(module).items()
            if inspect.isfunction(v) and v.__module__ == module.__name__ and not n.startswith("_")
        )
        listing = f" (recipes there: {', '.join(recipes)})" if recipes else ""
        raise UsageError(
            f"module {module_name!r} has no recipe function {func_name!r}{_did_you_mean(func_name, recipes)}{listing}"
        )
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:  # unresolvable annotations: treat every parameter as a string
        hints = {}
    recipe = Recipe(target=target, func=func, params={}, hints=hints)
    for name, param in inspect.signature(func).parameters.items():
        if param.kind is param.VAR_KEYWORD:
            recipe.var_kwargs = True
            continue
        if param.kind is param.VAR_POSITIONAL:
            continue
        model = _model_class(hints.get(name, param.annotation))
        if model is not None:
            if recipe.config_cls is not None:
                raise UsageError(
                    f"recipe {target} has two config parameters ({recipe.config_param!r} and {name!r}); "
                    "a recipe takes at most one pydantic config"
                )
            recipe.config_param, recipe.config_cls = name, model
            if isinstance(param.default, BaseModel):
                recipe.config_default = param.default
            recipe.fields = config_fields(model)
        else:
            recipe.params[name] = param
    clash = sorted(set(recipe.params) & set(recipe.fields))
    if clash:
        raise UsageError(f"recipe {target}: {clash[0]!r} is both a parameter and a config path")
    return recipe


# -- the command line --------------------------------------------------------------------------------------------


@dataclass
class Invocation:
    """A parsed command line. ``assignments`` keeps the command line's order (a later one wins):
    ``(section, key, value)`` with section ``"args"``, ``"overrides"`` or None for a bare ``key=value``."""

    target: str | None = None
    assignments: list[tuple[str | None, str, str]] = field(default_factory=list)
    help: bool = False
    dry_run: bool = False

    @property
    def args(self) -> list[tuple[str, str]]:
        return [(k, v) for s, k, v in self.assignments if s == "args"]

    @property
    def overrides(self) -> list[tuple[str, str]]:
        return [(k, v) for s, k, v in self.assignments if s == "overrides"]


_OPTIONS = ("--args", "--overrides", "--help", "--dry-run")


def parse_argv(argv: list[str]) -> Invocation:
    """Split the command line; every value stays the exact string it arrived as."""
    inv = Invocation()
    section: str | None = None
    for token in argv:
        if token in ("-h", "--help"):
            inv.help = True
        elif token == "--dry-run":
            inv.dry_run = True
        elif token in ("--args", "--overrides"):
            section = token[2:]
        elif token.startswith("-") and "=" not in token:
            raise UsageError(f"unknown option {token!r}{_did_you_mean(token, list(_OPTIONS))}")
        elif inv.target is None and section is None and "=" not in token:
            inv.target = token
        else:
            key, eq, value = token.partition("=")
            if not eq or not key or key != key.strip() or key.startswith("-"):
                where = f"--{section}" if section else "the command line"
                raise UsageError(f"malformed assignment {token!r} in {where}: expected key=value, e.g. run=my_run")
            inv.assignments.append((section, key, value))
    return inv


def _set_nested(tree: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _unknown(recipe: Recipe, key: str, what: str) -> NoReturn:
    sections = {".".join(p.split(".")[:i]) for p in recipe.fields for i in range(1, p.count(".") + 1)}
    if key in sections:
        inside = [p for p in recipe.fields if p.startswith(key + ".")]
        raise UsageError(
            f"{what} {key!r} is a config section, not a value; set its fields, e.g. {', '.join(inside[:4])}"
        )
    if not recipe.names:
        raise UsageError(f"unknown {what} {key!r}: recipe {recipe.target} takes no arguments or config")
    raise UsageError(
        f"unknown {what} {key!r}{_did_you_mean(key, recipe.names)} (all of them: {PROG} {recipe.target} --help)"
    )


def _param_type(recipe: Recipe, name: str) -> Any:
    """A parameter's annotation; without one, the type of a plain default (``n=3`` takes ints), else str."""
    param = recipe.params[name]
    annotation = recipe.hints.get(name, param.annotation)
    if annotation is inspect.Parameter.empty and type(param.default) in (int, float, bool):
        return type(param.default)
    return annotation


def resolve_call(recipe: Recipe, inv: Invocation) -> dict[str, Any]:
    """The keyword arguments for the recipe function: coerced parameters plus the validated config."""
    kwargs: dict[str, Any] = {}
    tree: dict[str, Any] = {}
    for section, key, raw in inv.assignments:
        what = {"args": "argument", "overrides": "override"}.get(section or "")
        if key in recipe.params:
            kwargs[key] = coerce(key, _param_type(recipe, key), raw, "argument")
        elif key in recipe.fields:
            _set_nested(tree, key, coerce(key, recipe.fields[key].annotation, raw, "override"))
        elif recipe.var_kwargs and "." not in key:
            kwargs[key] = raw
        else:
            _unknown(recipe, key, what or ("override" if "." in key else "argument"))
    missing = [n for n, p in recipe.params.items() if p.default is inspect.Parameter.empty and n not in kwargs]
    if missing:
        raise UsageError(
            f"recipe {recipe.target} needs --args "
            + " ".join(f"{n}=<{_type_name(recipe.hints.get(n, str))}>" for n in missing)
        )
    if recipe.config_cls is not None and recipe.config_param is not None:
        base = recipe.config_default.model_dump(exclude_unset=True) if recipe.config_default is not None else {}
        try:
            # Built from the overrides alone (plus an explicit default), so ``model_fields_set`` /
            # ``model_dump(exclude_unset=True)`` tell a recipe which values were set on the command line.
            kwargs[recipe.config_param] = recipe.config_cls.model_validate(_deep_merge(base, tree))
        except ValidationError as e:
            err = e.errors()[0]
            path = ".".join(str(p) for p in err["loc"]) or "config"
            raise UsageError(f"invalid config at {path!r}: {err['msg']}") from None
    return kwargs


# -- help --------------------------------------------------------------------------------------------------------

USAGE = f"""usage: {PROG} <module>.<function> [--args key=value ...] [--overrides dotted.path=value ...]
                                 [--dry-run] [--help]

Run a recipe function with a nested config (the job side of a sweep).

  --args        the function's parameters, e.g. run=my_run or policy_uri=file://./train_dir/my_run/checkpoints
  --overrides   fields of the recipe's config by dotted path, e.g. trainer.optimizer.learning_rate=1e-3
  --dry-run     print the resolved arguments and config as JSON and exit without running
  --help        with a recipe: its parameters and every config path with type and default

Values are converted to the annotated types (1e-3, 2e4, true/false, null); nothing is evaluated.
If the function returns a dict, it is printed as the job's result line: SWEEP_RESULT {{...}}.
Exit codes: 0 done, 2 bad input (one line on stderr), 1 the recipe failed.

examples:
  {PROG} recipes.cartpole.train --args run=demo --overrides trainer.total_timesteps=20000
  {PROG} recipes.cartpole.evaluate --args policy_uri=file://./train_dir/demo/checkpoints
  {PROG} recipes.toy.train --help
"""


def _fmt_default(value: Any) -> str:
    if isinstance(value, BaseModel):
        return type(value).__name__ + "()"
    return json.dumps(value, default=str)


def recipe_help(recipe: Recipe) -> str:
    doc = inspect.getdoc(recipe.func) or ""
    lines = [f"usage: {PROG} {recipe.target} [--args key=value ...] [--overrides path=value ...]", ""]
    if doc:
        lines += [doc, ""]
    if recipe.params:
        lines.append("arguments (--args):")
        width = max(len(n) for n in recipe.params)
        for name, p in recipe.params.items():
            tname = _type_name(recipe.hints.get(name, p.annotation if p.annotation is not p.empty else str))
            default = "required" if p.default is p.empty else f"default {_fmt_default(p.default)}"
            lines.append(f"  {name:<{width}}  {tname}, {default}")
        lines.append("")
    if recipe.fields:
        cls = recipe.config_cls.__name__ if recipe.config_cls else "config"
        lines.append(f"config paths (--overrides), from {cls}:")
        width = max(len(p) for p in recipe.fields)
        defaults = recipe.config_default.model_dump() if recipe.config_default is not None else None
        for path, f in recipe.fields.items():
            default = f.default
            if defaults is not None:
                node: Any = defaults
                for part in path.split("."):
                    node = node.get(part) if isinstance(node, dict) else None
                default = node
            text = (
                f"  {path:<{width}}  {_type_name(f.annotation)} = {'required' if f.required else _fmt_default(default)}"
            )
            if f.description:
                text += f"  # {f.description}"
            lines.append(text)
    return "\n".join(lines)


# -- main --------------------------------------------------------------------------------------------------------


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    return code


def check_command(argv: list[str]) -> None:
    """The runner's whole validation of a command line (the recipe imported, every argument and override
    converted and checked), without running the recipe: UsageError with the message the job would exit 2 with."""
    inv = parse_argv(argv)
    if inv.target is None:
        raise UsageError("no recipe given: expected <module>.<function>")
    resolve_call(load_recipe(inv.target), inv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        inv = parse_argv(argv)
        if inv.target is None:
            if inv.help:
                print(USAGE)
                return 0
            print(USAGE, file=sys.stderr)
            return _fail("no recipe given: expected <module>.<function>")
        recipe = load_recipe(inv.target)
        if inv.help:
            print(recipe_help(recipe))
            return 0
        kwargs = resolve_call(recipe, inv)
    except UsageError as e:
        return _fail(str(e))
    if inv.dry_run:
        shown = {k: (v.model_dump(mode="json") if isinstance(v, BaseModel) else v) for k, v in kwargs.items()}
        print(json.dumps({"recipe": recipe.target, "kwargs": shown}, indent=2, default=str))
        return 0
    try:
        result = recipe.func(**kwargs)
    except UsageError as e:
        return _fail(str(e))
    except RecipeError as e:
        return _fail(f"{recipe.target} failed: {e}", 1)
    if isinstance(result, BaseModel):
        result = result.model_dump(mode="json")
    if isinstance(result, dict):
        report_result(result)
    elif result is not None:
        print(
            f"{PROG}: note: {recipe.target} returned a {type(result).__name__}, not a dict; no result reported",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    # Run the importable module's main, not this ``__main__`` copy: recipes raise orchestrator.core.runner's
    # UsageError and RecipeError, which must be the classes main() catches.
    from orchestrator.core.runner import main as _main

    sys.exit(_main())
