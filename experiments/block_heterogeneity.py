"""Block heterogeneity of resnet1d vs vit1d (experiments/block_heterogeneity.toml): run, then report.

    nice -n 10 python experiments/block_heterogeneity.py --only resnet1d &   # the two models can run side by side
    nice -n 10 python experiments/block_heterogeneity.py --only vit1d
    nice -n 10 python experiments/block_heterogeneity.py --only resnet1d --seeds 4 3     # a third process
    python experiments/block_heterogeneity.py --report                      # RESULTS.md block + figures from records

Records: records/block_heterogeneity/<model>_seed<s>.json (committed; every number of the report is recomputed
from them). --report rewrites the block between `<!-- generated: block_heterogeneity -->` and
`<!-- end: block_heterogeneity -->` in RESULTS.md, writes RECORDS/summary.json and draws
FIGURES/zhang2024_heterogeneity.png/.pdf and FIGURES/zhang2024_block_densities.png/.pdf
(`landscape.experiment.blocks.report_blocks`, which notebooks/zhang2024.ipynb calls too).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

import torch

from landscape.cli import positive_int, run_cli
from landscape.errors import LandscapeError
from landscape.experiment.blocks import SPEC, load_config, report_blocks, run_blocks

ROOT = Path(__file__).resolve().parents[1]
BLOCK = "block_heterogeneity"


def write_results_block(path: Path, body: str) -> None:
    """Replace RESULTS.md's generated block `block_heterogeneity` with `body`."""
    text = path.read_text()
    pattern = re.compile(rf"(<!-- generated: {BLOCK} -->\n).*?(<!-- end: {BLOCK} -->)", re.S)
    if not pattern.search(text):
        raise LandscapeError(f"{path} has no <!-- generated: {BLOCK} --> block")
    path.write_text(pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(SPEC))
    ap.add_argument("--records", default=str(ROOT / "records" / BLOCK))
    ap.add_argument("--figures", default=str(ROOT / "figures"))
    ap.add_argument("--results", default=str(ROOT / "RESULTS.md"))
    ap.add_argument("--only", default=None, help="run only this model")
    ap.add_argument("--seeds", type=int, nargs="*", default=None, help="run only these seeds, in this order")
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--report", action="store_true", help="no training: table and figures from the records")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override settings (smoke runs)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg, claim = load_config(args.spec)
    for item in args.set:
        key, _, value = item.partition("=")
        cfg = dataclasses.replace(cfg, **{key: type(getattr(cfg, key))(value)})
    if not args.report:
        run_blocks(args.records, cfg, args.only, args.seeds, log=lambda s: print(s, file=sys.stderr, flush=True))
        return 0
    results = Path(args.results)
    if not results.exists():
        raise LandscapeError(f"{results} does not exist")
    _, table = report_blocks(args.records, args.figures, cfg, claim)
    write_results_block(results, table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
