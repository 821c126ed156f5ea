"""Regenerate every table of RESULTS.md and every registered figure from the committed records.

    python -m landscape.experiment.report                    # rewrite RESULTS.md's generated blocks, draw figures/
    python -m landscape.experiment.report --check            # exit 1 if a block differs from what the records give
    python -m landscape.experiment.report --only orhan2018_claims --no-figures

RESULTS.md holds each table between markers written by this module:

    <!-- generated: NAME -->
    ... (the output of the registered table NAME; never edited by hand) ...
    <!-- end: NAME -->

Every registered table must have its block and every block a registered table (`landscape.experiment.registry`).
Prose outside the blocks carries no result number: `stray_numbers` lists each decimal number there that is not a
setting of some experiments/*.toml (tests/experiment/test_report.py fails on any).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import tomllib

from landscape.errors import LandscapeError
from landscape.experiment import registry
from landscape.experiment.store import ROOT, Store

BLOCK = re.compile(r"<!-- generated: (?P<name>[A-Za-z0-9_.\-]+) -->\n(?P<body>.*?)<!-- end: (?P=name) -->", re.S)
PENDING = re.compile(r"<!-- pending: (?P<name>[A-Za-z0-9_.\-]+) -->\n(?P<body>.*?)<!-- end: (?P=name) -->", re.S)
# a decimal number (0.902, +0.116, −3.2, 2.4e-3), not part of a word, a commit hash or a version
NUMBER = re.compile(r"(?<![\w.\-])[+\-−]?\d+\.\d+(?:e[+\-−]?\d+)?(?!\w|\.\d)")


def blocks(text: str) -> dict[str, str]:
    """{name: body} of the generated blocks in `text`.

    Args:
        text: RESULTS.md's text.

    Returns:
        {block name: its body}.
    """
    found: dict[str, str] = {}
    for m in BLOCK.finditer(text):
        if m["name"] in found:
            raise LandscapeError(f"generated block {m['name']!r} occurs twice")
        found[m["name"]] = m["body"]
    return found


def render(tables: Mapping, store: Store, only: Iterable[str] | None = None) -> dict[str, str]:
    """{name: block body} for the registered tables (or those named in `only`), each ending in a newline.

    Args:
        tables: {name: table function} of the registry.
        store: the records.
        only: the names to render (None: all).

    Returns:
        {name: body}.
    """
    names = list(tables) if only is None else list(only)
    out = {}
    for name in names:
        if name not in tables:
            raise LandscapeError(f"no registered table {name!r}")
        body = tables[name](store).rstrip("\n") + "\n"
        out[name] = body
    return out


def substitute(text: str, bodies: Mapping[str, str]) -> str:
    """`text` with the body of each named block replaced.

    Args:
        text: RESULTS.md's text.
        bodies: {block name: new body}.

    Returns:
        The new text.
    """
    def repl(m: re.Match) -> str:
        name = m["name"]
        body = bodies.get(name, m["body"])
        return f"<!-- generated: {name} -->\n{body}<!-- end: {name} -->"
    return BLOCK.sub(repl, text)


def check_blocks(text: str, tables: Mapping, pending: Mapping = registry.PENDING) -> None:
    """Every registered table has a block in `text`, every block a registered table, and the typed sections
    awaiting regeneration are exactly the registry's PENDING ones.

    Args:
        text: RESULTS.md's text.
        tables: the registered tables.
        pending: the sections awaiting regeneration.

    Raises:
        LandscapeError: a block without a table, a table without a block, or other pending sections.
    """
    present = set(blocks(text))
    missing, unknown = sorted(set(tables) - present), sorted(present - set(tables))
    if missing or unknown:
        raise LandscapeError(f"RESULTS.md: tables without a block {missing}, blocks without a table {unknown}")
    typed = {m["name"] for m in PENDING.finditer(text)}
    if typed != set(pending):
        raise LandscapeError(f"RESULTS.md: pending (typed) sections {sorted(typed)}, registry.PENDING "
                             f"{sorted(pending)}: a typed section must be declared, a regenerated one removed")


def settings(experiments: Path) -> set[str]:
    """Every number written in experiments/*.toml (settings, published values with their source), as text in
    the forms prose may quote it: "0.5", "1e-3", "0.001".

    Args:
        experiments: the experiments directory.

    Returns:
        The numbers as text.
    """
    out: set[str] = set()

    def walk(v) -> None:
        if isinstance(v, bool):
            return
        if isinstance(v, (int, float)):
            out.update({repr(float(v)), f"{v:g}", str(v)})
        elif isinstance(v, str):
            out.update(m.group(0).lstrip("+") for m in re.finditer(r"\d+\.\d+(?:e[+\-]?\d+)?", v))
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
    for path in sorted(experiments.glob("*.toml")):
        walk(tomllib.loads(path.read_text()))
    return out


def stray_numbers(text: str, allowed: set[str]) -> list[str]:
    """Decimal numbers in `text` outside generated blocks, pending sections (`registry.PENDING`), code spans and
    fenced code that are not `allowed` (settings): "line N: 0.902" for each.

    Args:
        text: RESULTS.md's text.
        allowed: numbers that may appear (`settings`).

    Returns:
        The offending numbers with their lines.
    """
    stripped = BLOCK.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    stripped = PENDING.sub(lambda m: "\n" * m.group(0).count("\n"), stripped)
    stripped = re.sub(r"```.*?```", lambda m: "\n" * m.group(0).count("\n"), stripped, flags=re.S)
    stripped = re.sub(r"`[^`\n]*`", "", stripped)
    out = []
    for i, line in enumerate(stripped.splitlines(), 1):
        for m in NUMBER.finditer(line):
            token = m.group(0).replace("−", "-").lstrip("+-")
            if token not in allowed:
                out.append(f"line {i}: {m.group(0)}")
    return out


def draw_figures(store: Store, out: Path, only: Iterable[str] | None = None) -> list[Path]:
    """Draw the registered figures (or those named in `only`) into out/NAME.png and .pdf.

    Args:
        store: the records.
        out: the figures directory.
        only: the figure names (None: all).

    Returns:
        The files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    figs = registry.figures()
    names = list(figs) if only is None else [n for n in only if n in figs]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        fig = figs[name](store, out / name)
        if fig is not None:
            import matplotlib.pyplot as plt

            plt.close(fig)
        written.append(out / f"{name}.png")
    return written


def main(argv: list[str] | None = None) -> int:
    """`python -m landscape.experiment.report`: regenerate RESULTS.md's tables and the figures from the records.

    Args:
        argv: the command-line arguments (None: sys.argv[1:]).

    Returns:
        The exit status.
    """
    ap = argparse.ArgumentParser(prog="python -m landscape.experiment.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=str(ROOT / "RESULTS.md"))
    ap.add_argument("--records", default=str(ROOT / "records"))
    ap.add_argument("--experiments", default=str(ROOT / "experiments"))
    ap.add_argument("--figures", default=str(ROOT / "figures"))
    ap.add_argument("--only", nargs="*", help="only these tables / figures")
    ap.add_argument("--no-figures", action="store_true")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block differs")
    ap.add_argument("--list-grids", action="store_true", help="print NAME[:PROFILE] of every registered grid")
    args = ap.parse_args(argv)
    if args.list_grids:
        print("\n".join(g.spec for g in registry.grids()))
        return 0
    store = Store(args.records, args.experiments)
    path = Path(args.results)
    text = path.read_text()
    tables = registry.tables()
    check_blocks(text, tables)
    bodies = render(tables, store, None if args.only is None else [n for n in args.only if n in tables])
    new = substitute(text, bodies)
    stray = stray_numbers(new, settings(Path(args.experiments)))
    if args.check:
        differ = [n for n, b in bodies.items() if blocks(text)[n] != b]
        for n in differ:
            print(f"{path}: block {n!r} differs from what the records give", file=sys.stderr)
        for s in stray:
            print(f"{path}: result number outside a generated block, {s}", file=sys.stderr)
        for name, why in registry.PENDING.items():
            print(f"{path}: section {name!r} is still typed by hand, pending {why}", file=sys.stderr)
        return 1 if differ or stray else 0
    if new != text:
        path.write_text(new)
    for s in stray:
        print(f"warning: {path}: result number outside a generated block, {s}", file=sys.stderr)
    if not args.no_figures:
        draw_figures(store, Path(args.figures), args.only)
    return 0


if __name__ == "__main__":
    from landscape.cli import run_cli

    sys.exit(run_cli(main))
