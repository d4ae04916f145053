"""The quickstart: fixtures for all six datasets, then the quickstart sweep on the tiny model."""

from __future__ import annotations

import logging

from .config import resolve_repo_path
from .fixtures import make_all
from .sweep_config import load_sweep

log = logging.getLogger(__name__)


def quickstart(out: str, overrides: list[str] = ()) -> int:
    from .sweep import run_sweep

    fixtures = f"{out.rstrip('/')}/fixtures"
    make_all(fixtures)
    log.info("fixtures written to %s", fixtures)
    given = {o.split("=", 1)[0].strip() for o in overrides}
    own = [o for o in (f"output={out}", f"data_root={fixtures}") if o.split("=", 1)[0] not in given]
    sweep = load_sweep(resolve_repo_path("configs/quickstart.yaml"), [*own, *overrides])
    results = run_sweep(sweep)
    return 0 if all(r.get("status") == "ok" for r in results) else 1
