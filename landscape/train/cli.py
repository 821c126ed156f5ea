"""The command line of `python -m landscape.train`: flags, TOML merging, threads, exit codes.

    python -m landscape.train --model fc --model-config '{"kind": "residual", "depth": 20, "width": 128}' \\
        --epochs 30 --optimizer adam --lr 1e-3 --out runs/res20
    python -m landscape.train --config experiments/train_resnetv2_cifar10.toml --out runs/r18 --resume
    torchrun --standalone --nproc_per_node W -m landscape.train ... --out runs/x

Writes OUT/config.json, OUT/metrics.jsonl and OUT/checkpoint.pt after every epoch (docs/formats.md);
--keep-epochs keeps every epoch as OUT/epochs/epoch_NNNN.pt (0000 = initial weights); --probes A,B
--probe-every K writes OUT/probes.jsonl; --tensorboard DIR mirrors the metrics as TensorBoard scalars.

Exit codes: 0 done; 2 bad input or a non-finite loss (one line on stderr; the last good checkpoint
stays); 128+signal (130 SIGINT, 143 SIGTERM) when interrupted: the checkpoint of the last complete
epoch stays and `--resume` continues bit-exactly on CPU.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from landscape import distributed
from landscape.cli import THREADS_HELP, Parser, cpu_threads
from landscape.data import DATASETS
from landscape.errors import LandscapeError
from landscape.train.config import OPTIMIZERS, SCHEDULES, TrainConfig, load_toml
from landscape.train.loop import train

DESCRIPTION = ("Train a landscape model on a named data set: a checkpoint after every epoch, resumable "
               "bit-for-bit on CPU, DistributedDataParallel under torchrun.")
EPILOG = """examples:
  python -m landscape.train --model fc --model-config '{"kind": "residual", "depth": 20, "width": 128}' \\
      --epochs 30 --optimizer adam --lr 1e-3 --out runs/res20
  python -m landscape.train --config experiments/train_resnetv2_cifar10.toml --out runs/r18 --resume
  torchrun --standalone --nproc_per_node W -m landscape.train ... --out runs/x

outputs (docs/formats.md):
  OUT/config.json, OUT/metrics.jsonl and OUT/checkpoint.pt after every epoch; with --keep-epochs
  OUT/epochs/epoch_NNNN.pt (0000: the initial weights); with --probes OUT/probes.jsonl; with --tensorboard
  the same metrics as TensorBoard scalars.

learning rate at optimizer step s of T, W = warmup epochs x steps per epoch:
  s < W: lr (s+1)/W;  then constant: lr;  step: lr gamma^(milestones passed);  cosine: lr (1 + cos(pi (s-W)/(T-W)))/2

exit status:
  0 done; 2 bad input or a non-finite loss (one line on stderr; the last good checkpoint stays);
  130 / 143 on SIGINT / SIGTERM: the last complete epoch's checkpoint stays, --resume continues it."""


def build_parser() -> argparse.ArgumentParser:
    """The parser of `python -m landscape.train` (flags left out stay absent, so --config values survive).

    Returns:
        A `landscape.cli.Parser` (usage errors are one line).
    """
    S = argparse.SUPPRESS
    p = Parser(prog="python -m landscape.train", description=DESCRIPTION, epilog=EPILOG,
               formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=S)
    p.add_argument("--config", help="TOML file of training options; flags given here override it")
    g = p.add_argument_group("model")
    g.add_argument("--model", help="model name (landscape.models.available()), default fc")
    g.add_argument("--model-config", type=_json_dict, metavar="JSON",
                   help='model options as JSON, merged over the config file\'s: \'{"kind": "residual"}\'')
    g = p.add_argument_group("data")
    g.add_argument("--data", help=f"data set: {', '.join(DATASETS)} (default mnist1d)")
    g.add_argument("--data-root", help="directory of the image data sets (default: the landscape cache)")
    g.add_argument("--n-samples", type=int, help="training-set size (MNIST-1D: generated; images: first n)")
    g.add_argument("--data-seed", type=int, help="MNIST-1D generation seed (default 0)")
    g.add_argument("--download", action="store_true", help="download a missing image data set (torchvision)")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction,
                   help="random reflect-pad-4 crop + horizontal flip of training images")
    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=int, help="number of epochs (default 30)")
    g.add_argument("--batch-size", type=int, help="training batch size (default 128)")
    g.add_argument("--eval-batch-size", type=int, help="batch size of the test evaluation (default 1024)")
    g.add_argument("--optimizer", choices=OPTIMIZERS, help="sgd, adam (L2) or adamw (default adam)")
    g.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    g.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    g.add_argument("--weight-decay", type=float, help="weight decay (default 0)")
    g.add_argument("--schedule", choices=SCHEDULES, help="lr schedule after warm-up (default constant)")
    g.add_argument("--warmup-epochs", type=float, help="linear warm-up length in epochs (default 0)")
    g.add_argument("--milestones", type=_int_list, metavar="E1,E2",
                   help="epochs at which the step schedule multiplies the lr by --gamma")
    g.add_argument("--gamma", type=float, help="step-schedule factor (default 0.1)")
    g.add_argument("--clip-grad", type=float, help="clip the global gradient norm to this value")
    g.add_argument("--loss", metavar="ce|mse|MODULE:FUNCTION",
                   help="training loss: ce (cross-entropy, default), mse (½‖f(x) − onehot(y)‖², Cohen et al. "
                        "2021's square loss) or an importable function loss(output, labels) -> batch mean")
    g.add_argument("--label-smoothing", type=float, help="label smoothing of the cross-entropy (default 0)")
    g.add_argument("--bias-reg", type=float, metavar="STRENGTH",
                   help="BiasReg strength λ_b: adds λ_b Σ (b − β)² (docs/methods.md §A.3, a reconstruction)")
    g.add_argument("--bias-target", type=float, metavar="BETA", help="BiasReg target β (default 0)")
    g.add_argument("--bias-targets", help="which biases BiasReg covers: branch (default) or linear")
    g.add_argument("--procrustes-p", type=float, metavar="P",
                   help="Procrustes projection after each step with probability P (models with "
                        "procrustes_targets, docs/methods.md §C.3)")
    g = p.add_argument_group("run")
    g.add_argument("--device", help="auto (CUDA when present), cpu, cuda, cuda:1 ... (default auto)")
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA only)")
    g.add_argument("--fsdp", action="store_true", help="under torchrun: shard the model with FSDP2 instead of "
                   "replicating it (DDP); checkpoints hold the full states")
    g.add_argument("--threads", type=int, metavar="N", help=f"{THREADS_HELP}; --resume keeps the run's count")
    g.add_argument("--seed", type=int, help="seed of weights, shuffling and the global RNG (default 0)")
    g.add_argument("--out", help="run directory: config.json, metrics.jsonl, checkpoint.pt")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    g.add_argument("--keep-epochs", action="store_true",
                   help="keep every epoch's checkpoint as OUT/epochs/epoch_NNNN.pt (0000: the initial weights)")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    g = p.add_argument_group("probes and logging")
    g.add_argument("--probes", type=_str_list, metavar="A,B",
                   help="diagnostics run during training (grad_norm, stream, jacobian, singularity, curvature); "
                        "records in OUT/probes.jsonl")
    g.add_argument("--probe-every", type=int, metavar="K", help="run the probes every K steps (default 100)")
    g.add_argument("--measure-samples", type=int, metavar="N",
                   help="size of the measurement set the singularity probe and the curvature monitor use: N "
                        "training samples drawn once with seed 0 (default: 10000 for singularity, 1000 for "
                        "curvature)")
    g.add_argument("--tensorboard", metavar="DIR",
                   help="also write training metrics and probe records as TensorBoard scalars to DIR "
                        "(needs the tensorboard extra)")
    return p


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _str_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    """The run's configuration: defaults ← --config TOML ← flags (model_config tables merged key by key).

    Args:
        argv: the arguments (None: sys.argv[1:]).

    Returns:
        The `TrainConfig`.
    """
    args = vars(build_parser().parse_args(argv))
    merged: dict = {}
    if "config" in args:
        merged.update(load_toml(args.pop("config")))
    model_config = {**merged.get("model_config", {}), **args.pop("model_config", {})}
    merged.update(args)
    if model_config or "model_config" in merged:
        merged["model_config"] = model_config
    return TrainConfig.from_dict(merged)


def _run_threads(cfg: TrainConfig) -> int | None:
    """--threads, or on --resume the count the run used (thread counts change float rounding, and a resume is
    bit-exact only with the same one), or None (`landscape.cli.default_threads`)."""
    if cfg.threads is not None or not (cfg.resume and cfg.out):
        return cfg.threads
    try:
        saved = json.loads((Path(cfg.out) / "config.json").read_text())["config"]["threads"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return saved if isinstance(saved, int) and not isinstance(saved, bool) and saved > 0 else None


def main(argv: list[str] | None = None) -> int:
    """The command line (every flag in docs/cli.md).

    Args:
        argv: the arguments (None: sys.argv[1:]).

    Returns:
        The exit status: 0, or 128 + signal when interrupted (2 comes from `run_cli`).
    """
    cfg = config_from_args(argv)
    with cpu_threads(_run_threads(cfg)) as cfg.threads:
        return _main(cfg)


def _main(cfg: TrainConfig) -> int:
    ok = False
    try:
        result = train(cfg, handle_signals=True)
        ok = True
    except LandscapeError:
        ok = True                    # raised on every rank alike (distributed.agree): they can leave together
        if distributed.env_rank() > 0:
            return 2                 # rank 0 prints the message once
        raise
    finally:
        distributed.shutdown(sync=ok)
    if distributed.env_rank() > 0:
        return 128 + result["signal"] if result["status"] == "interrupted" else 0
    if result["status"] == "interrupted":
        name = signal.Signals(result["signal"]).name
        where = (f"{result['checkpoint']} holds epoch {result['epoch']}" if result["checkpoint"]
                 else "no epoch was completed")
        print(f"interrupted by {name}: {where}; resume with --resume", file=sys.stderr)
        return 128 + result["signal"]
    final = result["final"]
    print(f"epoch {final['epoch']}: train loss {final['train_loss']:.4f} acc {final['train_acc']:.4f} | "
          f"test loss {final['test_loss']:.4f} acc {final['test_acc']:.4f}"
          + (f" | {result['checkpoint']}" if result["checkpoint"] else ""))
    return 0
