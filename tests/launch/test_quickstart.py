"""The quickstart path (fixtures -> Ray sweep -> results table), cut to two jobs to keep CI short."""

import json

import pytest
from conftest import emorec

pytestmark = pytest.mark.distributed


def test_quickstart_trains_and_prints_a_results_table(tmp_path):
    r = emorec("quickstart", "--out", str(tmp_path / "qs"), "datasets=[carer]", "set.train.max_steps=20",
               timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "carer_lora" in r.stdout and "carer_ptuning" in r.stdout and "2 jobs, 2 ok" in r.stdout
    results = json.loads((tmp_path / "qs" / "results.json").read_text())
    assert [j["status"] for j in results["jobs"]] == ["ok", "ok"]
    for fixture in ("iemocap", "meld", "emorynlp", "dailydialog", "carer", "goemotions"):
        assert (tmp_path / "qs" / "fixtures" / fixture).is_dir()
