"""The quickstart: fixtures for all six datasets, then the quickstart sweep on the tiny model."""

from __future__ import annotations

import logging

from emorec.config import resolve_repo_path
from emorec.data.fixtures import make_all
from emorec.launch.sweep_config import SweepConfig, load_sweep

log = logging.getLogger(__name__)


def fixture_sweep(out: str, overrides: list[str] = ()) -> SweepConfig:
    """Fixtures for all six datasets under OUT/fixtures, and configs/quickstart.yaml writing under OUT; the user's
    overrides win over both (`output=`, `data_root=` included)."""
    fixtures = f"{out.rstrip('/')}/fixtures"
    make_all(fixtures)
    log.info("fixtures written to %s", fixtures)
    given = {o.split("=", 1)[0].strip() for o in overrides}
    own = [o for o in (f"output={out}", f"data_root={fixtures}") if o.split("=", 1)[0] not in given]
    return load_sweep(resolve_repo_path("configs/quickstart.yaml"), [*own, *overrides])


def quickstart(out: str, overrides: list[str] = ()) -> int:
    from emorec.launch.sweep import run_sweep

    results = run_sweep(fixture_sweep(out, overrides))
    return 0 if all(r.get("status") == "ok" for r in results) else 1
