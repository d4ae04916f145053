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
    header = next(line.split() for line in r.stdout.splitlines() if line.startswith("job "))
    assert header[4:6] == ["value", "chance"]
    for job in results["jobs"]:  # the table sets each value beside what guessing scores on the same test split
        assert job["chance"] == pytest.approx(1 / 6, abs=0.05)
        row = next(line.split() for line in r.stdout.splitlines() if line.startswith(job["name"] + " "))
        assert row[4:6] == [f"{100 * job['value']:.2f}", f"{100 * job['chance']:.2f}"]
    for fixture in ("iemocap", "meld", "emorynlp", "dailydialog", "carer", "goemotions"):
        assert (tmp_path / "qs" / "fixtures" / fixture).is_dir()
