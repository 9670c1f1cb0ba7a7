"""`helm lint` and `helm template`, offline, without a helm executable.

None of the PyPI packages looked at ships a usable Linux helm executable (`helm-package` has
macOS and Windows builds only; the AWS CDK kubectl layers bury one in a Lambda layer behind
aws-cdk-lib). `helm-python-sdk` ships no executable either, but it embeds Helm's own Go SDK
(v4) as a shared library called through ctypes: the same chart loader, template engine,
values coalescing, values.schema.json validation and linter as the CLI, with no cluster and no
network. This script gives `helm/check.sh` and `tests/integration/test_helm.py`
the two commands they need, with the CLI's meaning:

    python helm/helmtool.py lint CHART [-f VALUES]... [--kube-version 1.29.0]...
    python helm/helmtool.py template CHART [-f VALUES]... [--name NAME] [--namespace NS]

`-f` files merge left to right as with helm. `--values-under KEY=FILE` puts a file's values
under KEY (a dependency's values, so an example written for the webhook-bridge chart can also
configure it as an application's dependency). Dependencies whose `repository` is `file://...`
are taken from that directory, as `helm dependency build` would copy them, but into a
temporary copy of the chart, so nothing is written to the tree. Exit status: 0 on success,
1 when the chart fails (lint findings, a template error, a `fail`, a schema violation).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

# Lint severities (helm's support.Severity): info, warning, error.
_INFO, _WARNING = 1, 2


def merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` merged into a copy of `base`, maps recursively, as helm merges `-f` files."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_values(
    files: Sequence[Path] = (), under: Sequence[tuple[str, Path]] = ()
) -> dict[str, Any]:
    """The user values of `-f FILE...` then `--values-under KEY=FILE...`, merged in order."""
    values: dict[str, Any] = {}
    for path in files:
        values = merge(values, yaml.safe_load(path.read_text()) or {})
    for key, path in under:
        values = merge(values, {key: yaml.safe_load(path.read_text()) or {}})
    return values


@contextlib.contextmanager
def with_local_dependencies(chart: Path) -> Iterator[Path]:
    """`chart`, or a temporary copy of it whose charts/ holds its `file://` dependencies."""
    metadata = yaml.safe_load((chart / "Chart.yaml").read_text())
    local = [
        dependency
        for dependency in metadata.get("dependencies") or []
        if str(dependency.get("repository", "")).startswith("file://")
    ]
    if not local:
        yield chart
        return
    with tempfile.TemporaryDirectory(prefix="helmtool-") as scratch:
        copy = Path(scratch) / chart.name
        shutil.copytree(chart, copy, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
        for dependency in local:
            source = (chart / dependency["repository"].removeprefix("file://")).resolve()
            shutil.copytree(source, copy / "charts" / dependency["name"])
        yield copy


def render(
    chart: Path,
    values: dict[str, Any] | None = None,
    *,
    name: str = "release-name",
    namespace: str = "default",
) -> dict[str, str]:
    """Every rendered template of `chart` (NOTES.txt included), by path, as `helm template`
    renders them: values coalesced with the chart's and validated against its schema.

    Raises helm_python.HelmError (HelmRenderError for a `fail`, HelmValuesError for a schema
    violation) with Helm's message."""
    with with_local_dependencies(chart) as ready, helm.Chart.load(ready) as loaded:
        return loaded.render(values or {}, name=name, namespace=namespace, is_install=True)


def manifests(rendered: Mapping[str, str], *, notes: bool = False) -> str:
    """The rendered files as one YAML stream with `# Source:` headers, like `helm template`."""
    parts = []
    for path in sorted(rendered):
        text = rendered[path]
        if path.endswith("NOTES.txt") and not notes:
            continue
        meaningful = [
            line for line in text.splitlines() if line.strip() and not line.startswith("#")
        ]
        if meaningful:
            parts.append(f"---\n# Source: {path}\n{text.strip()}\n")
    return "".join(parts)


def lint(
    chart: Path, values: dict[str, Any] | None = None, *, kube_version: str | None = None
) -> list[str]:
    """`helm lint --strict`: the findings that fail it (warnings and errors), one line each.
    Info findings (such as "icon is recommended") are left out.

    As with the helm CLI, lint renders the templates but a `fail` in them only logs (Helm's
    lint mode): `render` is what catches those."""
    with with_local_dependencies(chart) as ready:
        report = helm.lint(
            ready,
            values or {},
            strict=True,
            kube_version=f"v{kube_version.removeprefix('v')}" if kube_version else None,
        )
    failures = []
    for message in report.get("messages") or []:
        line = f"{message['path']}: {message['error'].strip()}"
        if message["severity"] > _INFO:
            label = "WARNING" if message["severity"] == _WARNING else "ERROR"
            failures.append(f"[{label}] {line}")
    # `errors` repeats the failing messages; alone, it is a failure the messages did not name.
    return failures or [str(error).strip() for error in report.get("errors") or []]


def _key_and_file(text: str) -> tuple[str, Path]:
    key, sep, file = text.partition("=")
    if not sep or not key or not file:
        raise argparse.ArgumentTypeError(f"expected KEY=FILE, got {text!r}")
    return key, Path(file)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="helmtool", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for command in ("lint", "template"):
        sub = commands.add_parser(command)
        sub.add_argument("chart", type=Path)
        sub.add_argument("-f", "--values", type=Path, action="append", default=[])
        sub.add_argument("--values-under", type=_key_and_file, action="append", default=[])
    lint_parser = commands.choices["lint"]
    lint_parser.add_argument("--kube-version", action="append", default=[])
    template_parser = commands.choices["template"]
    template_parser.add_argument("--name", default="release-name")
    template_parser.add_argument("--namespace", default="default")
    template_parser.add_argument("--notes", action="store_true", help="print NOTES.txt too")
    template_parser.add_argument("-o", "--output", type=Path, help="write here, not stdout")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    values = load_values(args.values, args.values_under)
    what = " ".join(
        [str(args.chart)]
        + [f"-f {path}" for path in args.values]
        + [f"--values-under {key}={path}" for key, path in args.values_under]
    )
    if args.command == "lint":
        failures: list[str] = []
        for version in args.kube_version or [None]:
            failures += [
                f"{version or 'default'}: {line}"
                for line in lint(args.chart, values, kube_version=version)
            ]
        for line in failures:
            print(line, file=sys.stderr)
        print(f"lint {what}: {'FAILED' if failures else 'ok'}", file=sys.stderr)
        return 1 if failures else 0
    try:
        rendered = render(args.chart, values, name=args.name, namespace=args.namespace)
    except helm.HelmError as error:
        print(f"template {what}: {error}", file=sys.stderr)
        return 1
    stream = manifests(rendered, notes=args.notes)
    if args.output:
        args.output.write_text(stream)
    else:
        sys.stdout.write(stream)
    return 0


if __name__ == "__main__":
    sys.exit(main())
