"""The `emorec` command line. Every subcommand is a thin wrapper over a library function."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from emorec.errors import EmorecError

log = logging.getLogger("emorec")

EXAMPLES = """\
examples:
  emorec data fixtures fixtures/                     # small synthetic copies of all six releases
  emorec data inspect --dataset meld --path data/MELD.Raw --json
  emorec train configs/runs/meld_lora.yaml data.path=data/MELD.Raw output=s3://bucket/runs/meld_lora
  torchrun --nproc_per_node 2 -m emorec.cli train configs/runs/meld_lora.yaml
  emorec eval runs/meld_lora --split test
  emorec predict runs/meld_lora --text "I can't believe you did that!"
  emorec sweep configs/sweeps/paper.yaml output=s3://bucket/emorec/paper   # 6 x 2 jobs on a Ray cluster
  emorec quickstart                                  # 6 datasets x 2 methods on a tiny model, on CPU
  emorec convert THUDM/chatglm2-6b models/chatglm2-6b  # ChatGLM2/3 -> a standard transformers GLM checkpoint
"""


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    import warnings

    for message in ("`past_key_values` is deprecated", ".*is deprecated. Please use `torch.distributed",
                    "`is_gradient_checkpointing` is deprecated"):
        warnings.filterwarnings("ignore", message=message)
    logging.getLogger("DeepSpeed").setLevel(logging.ERROR)
    for noisy in ( "torch.distributed", "datasets", "urllib3", "botocore", "s3fs", "aiobotocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_config(args) -> int:
    from emorec.config import dump, load_config

    print(dump(load_config(args.config, args.overrides)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="emorec",
        description="Adapt ChatGLM-family LLMs (GLM-4, ChatGLM2/3) into emotion recognisers with LoRA or "
                    "P-Tuning v2 under DeepSpeed, on six emotion benchmarks or your own data.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Each subpackage adds its own commands (its commands.register), in the order data flows.
    for package in ("data", "model", "train", "eval", "launch", "report", "bench"):
        importlib.import_module(f"emorec.{package}.commands").register(sub)
    c = sub.add_parser("config", help="print a run config with defaults and overrides applied")
    c.add_argument("config")
    c.add_argument("overrides", nargs="*", metavar="key=value")
    c.set_defaults(func=cmd_config)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after options (train CONFIG --no-progress a.b=1); argparse stops at the option.
    if extra and hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except EmorecError as e:
        print(f"emorec: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
