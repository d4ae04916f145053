"""`emorec train` and `emorec export`."""

from __future__ import annotations

import json
import logging
import os

log = logging.getLogger("emorec")


def cmd_train(args) -> int:
    from emorec.config import load_config
    from emorec.train.recipe import StoppedEarly, run

    cfg = load_config(args.config, args.overrides)
    try:
        result = run(cfg, show_progress=not args.no_progress)
    except StoppedEarly as e:
        log.warning("%s", e)
        return 3
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: result[k] for k in ("name", "dataset", "method", "primary", "value", "steps")}))
    return 0


def register(sub) -> None:
    t = sub.add_parser("train", help="train, checkpoint, export and evaluate one (dataset, method) run",
                       description="Train one run. CONFIG is a YAML run config (see configs/runs/); each "
                                   "key=value override sets a dotted key, e.g. train.lr=1e-4 method.name=ptuning. "
                                   "Resumes from the newest complete checkpoint under `output` (resume=auto).")
    t.add_argument("config")
    t.add_argument("overrides", nargs="*", metavar="key=value")
    t.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    t.set_defaults(func=cmd_train)
    from emorec.train import export

    export.register(sub)
