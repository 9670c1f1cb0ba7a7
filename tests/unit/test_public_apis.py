"""No file under service/ reaches a private attribute of a dependency.

A name with one leading underscore is private to the code that defines it: a dependency may
change or drop it in any release. The rules, read from the source (`ast`) and, for base
classes, from the classes themselves:

1. `x._name` is reached only on `self` or `cls` (an object's own attributes), or when `_name`
   is one of the project's own methods or class attributes defined in a class of the same
   module (the module's own private helpers), or one of the documented methods of the standard
   library's named tuples (`_replace`, `_asdict`, ...). Anything else, `super()._name`
   included, may be a dependency's private attribute, so it fails.
2. A class extending a class from outside `service` (an aiohttp connector, a uvicorn server,
   a pydantic-settings source) neither defines nor uses, on `self` or `cls`, a private name
   that the outside class (or any class it extends) defines, reads or assigns: that would be
   overriding or reaching into the dependency's internals.
3. Nothing is imported from a private module (`pkg._impl`) or by a private name
   (`from pkg import _name`) of another package.

Dunder names (`__aenter__`, `__version__`) are public protocol and are never flagged.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import textwrap
import typing
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import aiohttp
import pytest

import service

ROOT = Path(service.__file__).parent
SOURCES = sorted(ROOT.rglob("*.py"))
# The standard library documents these methods of every `collections.namedtuple` class.
NAMEDTUPLE_API = frozenset({"_replace", "_asdict", "_make", "_fields", "_field_defaults"})


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _own_names(node: ast.ClassDef) -> set[str]:
    """The names a class body defines: its methods and class attributes."""
    names: set[str] = set()
    for item in node.body:
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(item.name)
        elif isinstance(item, ast.Assign):
            names.update(t.id for t in item.targets if isinstance(t, ast.Name))
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            names.add(item.target.id)
    return names


def _on_self(node: ast.AST) -> set[str]:
    """The attribute names read or assigned on `self` or `cls` anywhere under `node`."""
    return {
        sub.attr
        for sub in ast.walk(node)
        if isinstance(sub, ast.Attribute)
        and isinstance(sub.value, ast.Name)
        and sub.value.id in ("self", "cls")
    }


def private_accesses(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """Rule 1: each `x._name` the module reaches on something else than its own objects."""
    module_private = set().union(
        *(_own_names(node) for node in ast.walk(tree) if isinstance(node, ast.ClassDef))
    )
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not _private(node.attr):
            continue
        receiver = node.value
        if isinstance(receiver, ast.Name) and receiver.id in ("self", "cls"):
            continue
        through_super = (
            isinstance(receiver, ast.Call)
            and isinstance(receiver.func, ast.Name)
            and receiver.func.id == "super"
        )
        if node.attr in NAMEDTUPLE_API or (node.attr in module_private and not through_super):
            continue
        yield node.lineno, ast.unparse(node)


def private_imports(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """Rule 3: each import of another package's private module or private name."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
            names: list[str] = []
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
            names = [alias.name for alias in node.names]
        else:
            continue
        for module in modules:
            if module.split(".")[0] == "service":
                continue
            if any(_private(part) for part in module.split(".")) or any(map(_private, names)):
                yield node.lineno, ast.unparse(node)


@cache
def _names_of(cls: type) -> frozenset[str]:
    """What a class outside the project defines, reads or assigns on its instances."""
    names = set(dir(cls))
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # a class written in C: dir() is all there is
        return frozenset(names)
    return frozenset(names | _on_self(ast.parse(source)))


def overridden_privates(
    tree: ast.Module, namespace: dict[str, object]
) -> Iterator[tuple[int, str]]:
    """Rule 2: each private name a class shares with a class it extends from outside; the
    module's `namespace` says what its base-class names are."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        outside = {
            ancestor
            for base in node.bases
            for ancestor in _resolve(base, namespace).__mro__
            if ancestor is not object and ancestor.__module__.split(".")[0] != "service"
        }
        used = {name for name in _own_names(node) | _on_self(node) if _private(name)}
        for name in sorted(used):
            owners = sorted(base.__qualname__ for base in outside if name in _names_of(base))
            if owners:
                yield node.lineno, f"{node.name}.{name}, a name of {' and '.join(owners)}"


def _resolve(expression: ast.expr, namespace: dict[str, object]) -> type:
    """The class a base-class expression of the module names (`H11Protocol`,
    `aiohttp.TCPConnector`, `Generic[T]`, `Exception`)."""
    if isinstance(expression, ast.Subscript):
        expression = expression.value
    dotted = ast.unparse(expression)
    head, *rest = dotted.split(".")
    found = namespace[head] if head in namespace else getattr(builtins, head)
    for part in rest:
        found = getattr(found, part)
    if found in (typing.TypedDict, typing.NamedTuple):
        return object  # functions that make plain dicts and tuples: nothing to reach into
    assert isinstance(found, type), f"{dotted} is not a class the module names"
    return found


def findings(source: str, namespace: dict[str, object]) -> list[str]:
    """What the three rules find in a module's `source`."""
    tree = ast.parse(source)
    found = [*private_accesses(tree), *private_imports(tree), *overridden_privates(tree, namespace)]
    return [f"{line}: {text}" for line, text in sorted(found)]


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(ROOT.parent)))
def test_no_private_attribute_of_a_dependency(path: Path) -> None:
    """The module reaches no private attribute, module or name of a dependency."""
    # Importing __main__ would run the bridge; its classes are none.
    module = _module_name(path)
    namespace = vars(importlib.import_module(module)) if path.name != "__main__.py" else {}
    assert findings(path.read_text(), namespace) == []


SNIPPETS = [
    # A dependency's private attribute, read on an object that is not the code's own.
    ("def f(client):\n    return client._transport", ["2: client._transport"]),
    ("def f(self):\n    return self.session._request", ["2: self.session._request"]),
    # A base class's private method, called or overridden.
    (
        "class C(TCPConnector):\n    async def _resolve_host(self):\n"
        "        return await super()._resolve_host()",
        ["1: C._resolve_host, a name of TCPConnector", "3: super()._resolve_host"],
    ),
    # A base class's private attribute, assigned on self.
    (
        "class C(TCPConnector):\n    def close(self):\n        self._closed = True",
        ["1: C._closed, a name of BaseConnector and TCPConnector"],
    ),
    # Private modules and names of another package.
    ("from httpx._client import ClientState", ["1: from httpx._client import ClientState"]),
    ("from httpx import _config", ["1: from httpx import _config"]),
    # Allowed: the object's own names, the module's own classes' methods, named tuples' API.
    ("class C:\n    def _a(self):\n        return self._b", []),
    ("class C:\n    def _a(self):\n        pass\n\nC()._a()", []),
    ("def f(parts):\n    return parts._replace(path='/')", []),
    ("class C(TCPConnector):\n    def connect(self):\n        self._guard = 1", []),
]


@pytest.mark.parametrize(("source", "expected"), SNIPPETS)
def test_the_rules_flag_what_they_say(source: str, expected: list[str]) -> None:
    """Each rule flags a private name of a dependency and lets the project's own names by."""
    assert findings(source, {"TCPConnector": aiohttp.TCPConnector}) == expected
