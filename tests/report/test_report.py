"""`emorec report` and the scaling analysis: tables with published numbers, PNGs, TensorBoard, the
speedup/efficiency/projection math, and the throughput measurement the training loop records."""

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO, emorec, write_config

# ---------------------------------------------------------------------------------------------------
# A real run, and a sweep built from it
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, fixtures_dir) -> Path:
    """One real `emorec train` on the tiny GLM (a few seconds)."""
    root = tmp_path_factory.mktemp("report_run")
    out = root / "run"
    cfg = write_config(root / "run.yaml", fixtures_dir, "carer", "lora", name="carer_lora", output=str(out),
                       train={"max_steps": 6, "save_every": 3, "micro_batch_size": 4, "grad_accum": 1},
                       data={"max_eval_samples": 16})
    r = emorec("train", str(cfg), "--no-progress", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


MELD = ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]
DAILYDIALOG = ["no emotion", "anger", "disgust", "fear", "happiness", "sadness", "surprise"]

# Scaling numbers to check the math on: 1 -> 2 workers, 100 -> 180 samples/s.
SCALING = {1: {"samples_per_s": 100.0, "tokens_per_s": 7000.0, "step_time_s": 0.08, "step_time_mean_s": 0.08},
           2: {"samples_per_s": 180.0, "tokens_per_s": 12600.0, "step_time_s": 0.0889, "step_time_mean_s": 0.0889}}
FACTS = {"trainable_params": 7168, "total_params": 147136, "param_bytes": 4, "grad_bytes": 4, "zero_stage": 2,
         "micro_batch_size": 4, "grad_accum": 2}


def _job(real: dict, name: str, **changes) -> dict:
    m = json.loads(json.dumps(real))
    m.update(name=name, **changes)
    return m


@pytest.fixture(scope="module")
def sweep_dir(real_run, tmp_path_factory) -> Path:
    """A sweep output in emorec's layout: every job directory is a copy of the real run, with the dataset,
    metric, value and timing changed where the test needs known numbers."""
    real = json.loads((real_run / "metrics.json").read_text())
    root = tmp_path_factory.mktemp("report_sweep") / "sweep"
    cm7 = [[3 if i == k else (1 if k == (i + 1) % 7 else 0) for k in range(7)] for i in range(7)]
    jobs = {
        "carer_lora": _job(real, "carer_lora"),
        "meld_lora": _job(real, "meld_lora", dataset="meld", metric="weighted_f1", primary="weighted_f1", value=0.6123,
                          chance=0.1389, labels=MELD, confusion_matrix=cm7),
        "dailydialog_lora": _job(real, "dailydialog_lora", dataset="dailydialog", metric="micro_f1_no_neutral",
                                 primary="micro_f1_no_neutral", value=0.5, labels=DAILYDIALOG, confusion_matrix=cm7),
        "goemotions_lora": _job(real, "goemotions_lora", dataset="goemotions", metric="multilabel_macro_f1",
                                primary="macro_f1", value=0.25, labels=["joy", "anger", "neutral"],
                                confusion_matrix=[[[10, 2], [3, 5]], [[12, 1], [4, 3]], [[6, 4], [2, 8]]]),
        **{f"carer_lora_workers{n}": _job(real, f"carer_lora_workers{n}", world_size=n, scaling_group="carer_lora",
                                          **SCALING[n], **FACTS)
           for n in (1, 2)},
    }
    for name, metrics in jobs.items():
        shutil.copytree(real_run, root / name, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
        (root / name / "metrics.json").write_text(json.dumps(metrics))
    rows = [{k: v for k, v in m.items() if isinstance(v, (int, float, str))} | {"status": "ok"} for m in jobs.values()]
    rows.append({"name": "iemocap_lora", "dataset": "iemocap", "method": "lora", "status": "failed",
                 "error": "DataError: no IEMOCAP here"})
    (root / "results.json").write_text(json.dumps({"jobs": rows, "makespan_s": 12.5, "max_concurrent": 1}))
    return root


def _png_ok(path: Path) -> tuple[int, int]:
    from PIL import Image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size[0] > 100 and im.size[1] > 100
        return im.size


def _scalars(logdir: Path, tag: str) -> list:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


# ---------------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------------

def test_report_on_a_sweep_writes_tables_with_published_numbers_pngs_and_tensorboard(sweep_dir, tmp_path):
    out = tmp_path / "report"
    r = emorec("report", str(sweep_dir), "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "report.md" in r.stdout and "scaling" in r.stdout

    rows = {row["job"]: row for row in csv.DictReader(io.StringIO((out / "results.csv").read_text()))}
    assert set(rows) == {"carer_lora", "meld_lora", "dailydialog_lora", "goemotions_lora", "carer_lora_workers1",
                         "carer_lora_workers2", "iemocap_lora"}
    meld = rows["meld_lora"]
    assert (meld["metric"], meld["value"], meld["published_best"], meld["published_source"]) == \
        ("weighted_f1", "61.23", "70.44", "PRC-Emo")
    assert meld["chatglm2_lora_instructerc"] == "65.58" and meld["model"] == "tiny-glm" and meld["chance"] == "13.89"
    dd = rows["dailydialog_lora"]
    assert (dd["metric"], dd["value"], dd["published_best"], dd["published_source"]) == \
        ("micro_f1_no_neutral", "50.0", "64.07", "S+PAGE")
    assert rows["carer_lora"]["published_best"] == "" and rows["goemotions_lora"]["published_best"] == ""
    assert rows["iemocap_lora"]["status"] == "failed" and "no IEMOCAP" in rows["iemocap_lora"]["error"]

    md = (out / "report.md").read_text()
    assert_cites_papers(md)
    assert "| meld_lora | meld | lora | 1 | weighted_f1 | 61.23 | 13.89 | 70.44 | PRC-Emo | 65.58 | ok |" in md
    assert "64.07 | S+PAGE" in md and "LaERC-S" in md
    assert "Chance is what guessing one label uniformly at random scores" in md
    assert "7 jobs, 6 ok, 1 failed" in md and "no IEMOCAP" in md
    assert "not comparable with the published" in md  # tiny model, 16 examples

    for name in ("carer_lora", "meld_lora", "dailydialog_lora", "goemotions_lora"):
        _png_ok(out / "confusion" / f"{name}.png")
        assert f"confusion/{name}.png" in md
    _png_ok(out / "train_curves.png")
    _png_ok(out / "scaling.png")
    assert "![scaling](scaling.png)" in md and "50 GB/s per GPU" in md

    scaling = list(csv.DictReader(io.StringIO((out / "scaling.csv").read_text())))
    measured = [s for s in scaling if s["kind"] == "measured"]
    assert [(s["group"], int(s["workers"])) for s in measured] == [("carer_lora", 1), ("carer_lora", 2)]
    assert float(measured[1]["speedup"]) == pytest.approx(1.8)
    assert float(measured[1]["efficiency"]) == pytest.approx(0.9)
    projected = [s for s in scaling if s["kind"] == "projected" and s["zero_stage"] == "2"]
    assert [int(s["workers"]) for s in projected] == [1, 2, 4, 8, 16, 32, 64]
    assert all(float(s["bandwidth_gbs"]) == 50.0 for s in projected)
    assert "| 2 | 180.00 | 12600.00 |" in md and "1.80x | 90% |" in md

    curve = json.loads((sweep_dir / "meld_lora" / "train_curve.json").read_text())
    points = _scalars(out / "tensorboard" / "meld_lora", "train/loss")
    assert [p[0] for p in points] == [int(s) for s, _ in curve]
    assert [p[1] for p in points] == pytest.approx([loss for _, loss in curve])


def test_report_on_a_single_run(real_run, tmp_path):
    r = emorec("report", str(real_run), "--out", str(tmp_path / "rep"), "--no-tensorboard")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = list(csv.DictReader(io.StringIO((tmp_path / "rep" / "results.csv").read_text())))
    metrics = json.loads((real_run / "metrics.json").read_text())
    assert len(rows) == 1 and rows[0]["job"] == "carer_lora" and rows[0]["metric"] == "accuracy"
    assert float(rows[0]["value"]) == pytest.approx(round(100 * metrics["value"], 2))
    assert float(rows[0]["chance"]) == pytest.approx(round(100 * metrics["chance"], 2))
    _png_ok(tmp_path / "rep" / "confusion" / "carer_lora.png")
    _png_ok(tmp_path / "rep" / "train_curves.png")
    assert not (tmp_path / "rep" / "scaling.png").exists() and not (tmp_path / "rep" / "tensorboard").exists()
    assert "## Scaling" not in (tmp_path / "rep" / "report.md").read_text()

    r = emorec("report", str(tmp_path / "nothing-here"))
    assert r.returncode == 2 and "no results.json" in r.stderr


def test_report_reads_and_writes_object_storage(sweep_dir, s3_endpoint):
    from conftest import make_bucket

    from emorec.report.build import build_report

    fs = make_bucket("emorec-report")
    fs.put(str(sweep_dir), "emorec-report/sweep", recursive=True)
    written = build_report("s3://emorec-report/sweep")
    assert written["out"] == "s3://emorec-report/sweep/report"
    table = fs.cat("emorec-report/sweep/report/results.csv").decode()
    assert "meld_lora,meld,lora,tiny-glm,1,test,weighted_f1,61.23,13.89,70.44,PRC-Emo,65.58" in table
    for rel in ("report.md", "scaling.png", "train_curves.png", "confusion/meld_lora.png"):
        assert fs.cat(f"emorec-report/sweep/report/{rel}"), rel
    assert any("tfevents" in p for p in fs.find("emorec-report/sweep/report/tensorboard/meld_lora"))


def test_storage_options_on_the_command_line_nest_like_config_overrides(sweep_dir, s3_endpoint, monkeypatch):
    from conftest import make_bucket

    from emorec.cli import main
    from emorec.config import load_config, parse_options

    options = parse_options([f"client_kwargs.endpoint_url={s3_endpoint['url']}", "anon=false"], "--storage-option")
    assert options == {"client_kwargs": {"endpoint_url": s3_endpoint["url"]}, "anon": False}
    cfg = load_config(str(REPO / "configs/runs/meld_lora.yaml"),
                      [f"storage_options.client_kwargs.endpoint_url={s3_endpoint['url']}", "storage_options.anon=false"])
    assert cfg.storage_options == options
    fs = make_bucket("emorec-report-opts")
    fs.put(str(sweep_dir), "emorec-report-opts/sweep", recursive=True)
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the endpoint now comes only from --storage-option
    assert main(["report", "s3://emorec-report-opts/sweep", "--no-tensorboard",
                 "--storage-option", f"client_kwargs.endpoint_url={s3_endpoint['url']}"]) == 0
    assert fs.cat("emorec-report-opts/sweep/report/report.md")


def test_write_tensorboard_for_a_run_is_readable_and_replaced_on_rerun(real_run, tmp_path):
    from emorec.train.tensorboard import write_tensorboard

    run = tmp_path / "run"
    shutil.copytree(real_run, run, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    curve = json.loads((run / "train_curve.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text()) | {"samples_per_s": 12.5}
    assert write_tensorboard(str(run), curve, metrics)
    write_tensorboard(str(run), curve, metrics)  # a resumed run rewrites its file rather than adding one
    files = list((run / "tensorboard").iterdir())
    assert len(files) == 1 and files[0].name.startswith("events.out.tfevents")
    assert [s for s, _ in _scalars(run / "tensorboard", "train/loss")] == [s for s, _ in curve]
    assert _scalars(run / "tensorboard", "perf/samples_per_s") == [(curve[-1][0], 12.5)]
    assert _scalars(run / "tensorboard", f"eval/{metrics['primary']}")[0][1] == pytest.approx(metrics["value"])


# ---------------------------------------------------------------------------------------------------
# Scaling math
# ---------------------------------------------------------------------------------------------------

def test_speedup_and_efficiency_against_the_smallest_worker_count():
    from emorec.report.scaling import scaling_groups, speedup_table

    rows = [{"name": f"meld_lora_workers{n}", "world_size": n, "samples_per_s": thr, "status": "ok",
             "scaling_group": "meld_lora"} for n, thr in ((4, 300.0), (2, 180.0), (8, 480.0))]
    rows.append({"name": "meld_lora_workers16", "world_size": 16, "status": "failed", "scaling_group": "meld_lora"})
    groups = scaling_groups(rows)
    assert list(groups) == ["meld_lora"]
    table = speedup_table(groups["meld_lora"])
    assert [r["workers"] for r in table] == [2, 4, 8]
    assert [r["speedup"] for r in table] == pytest.approx([1.0, 300 / 180, 480 / 180])
    assert [r["efficiency"] for r in table] == pytest.approx([1.0, 300 / 180 / 2, 480 / 180 / 4])


def test_communication_volume_per_zero_stage():
    from emorec.report.comm_model import comm_bytes_per_step

    t, p = 1_000, 1_000_000
    assert comm_bytes_per_step(2, 1, t, p)["total"] == 0
    z0 = comm_bytes_per_step(0, 4, t, p, param_bytes=2, grad_bytes=2)
    assert z0["total"] == pytest.approx(2 * 0.75 * t * 2)  # ring all-reduce of the trainable grads
    z2 = comm_bytes_per_step(2, 4, t, p, param_bytes=2, grad_bytes=2, grad_accum=3)
    assert z2["grads"] == pytest.approx(3 * 0.75 * t * 2) and z2["trainable_params"] == pytest.approx(0.75 * t * 2)
    assert z2["frozen_params"] == 0
    z3 = comm_bytes_per_step(3, 4, t, p, param_bytes=2, grad_bytes=2, grad_accum=3)
    assert z3["frozen_params"] == pytest.approx(3 * 2 * 0.75 * (p - t) * 2)  # forward + backward gather, per micro-step
    assert z3["total"] > 100 * z2["total"]


def glm4_lora_base() -> dict:
    """GLM-4-9B with LoRA r8 on q/k/v: 19.2 samples/s, batch 8, one H100 (a measured anchor)."""
    trainable = 40 * (8 * (4096 + 4096) + 2 * 8 * (4096 + 256))
    return {"name": "meld_lora_workers1", "scaling_group": "meld_lora", "world_size": 1, "samples_per_s": 19.2, "step_time_s": 8 / 19.2,
            "trainable_params": trainable, "total_params": 9_400_000_000 + trainable, "param_bytes": 2,
            "grad_bytes": 2, "zero_stage": 2, "micro_batch_size": 8, "grad_accum": 1}


def test_projection_is_monotonic_states_its_bandwidth_and_shows_zero3_dominating():
    from emorec.report.comm_model import CommModel, breakeven_bandwidth_gbs, project
    from emorec.report.scaling import analyse, markdown

    base = glm4_lora_base()
    model = CommModel(bandwidth_gbs=50.0)
    counts = [1, 2, 4, 8, 16, 32, 64]
    for stage in (2, 3):
        proj = project(base, counts, model=model, stage=stage)
        thr = [p["samples_per_s"] for p in proj]
        eff = [p["efficiency"] for p in proj]
        assert thr == sorted(thr) and len(set(thr)) == len(thr)  # more workers, more samples/s
        assert eff == sorted(eff, reverse=True) and eff[0] == pytest.approx(1.0)
        assert proj[0]["samples_per_s"] == pytest.approx(19.2) and all(p["bandwidth_gbs"] == 50.0 for p in proj)
    z2 = project(base, counts, model=model, stage=2)
    z3 = project(base, counts, model=model, stage=3)
    assert all(p["efficiency"] > 0.99 and not p["comm_dominates"] for p in z2)  # a few MB of adapter gradients
    # the frozen 9.4B base, gathered twice per micro-step, outweighs compute from 4 workers on
    assert [p["comm_dominates"] for p in z3] == [False, False, True, True, True, True, True]
    assert z3[-1]["frozen_gather_s"] / z3[-1]["comm_s"] > 0.99
    # Faster links help ZeRO-3 monotonically; at the break-even bandwidth communication equals compute.
    fast = project(base, counts, model=CommModel(bandwidth_gbs=400.0), stage=3)
    assert all(f["efficiency"] > s["efficiency"] for f, s in zip(fast[1:], z3[1:]))
    b = breakeven_bandwidth_gbs(base, 8, model=model, stage=3)
    at_b = project(base, [8], model=CommModel(bandwidth_gbs=b), stage=3)[0]
    assert at_b["comm_s"] == pytest.approx(at_b["compute_s"])

    second = dict(base, name="meld_lora_workers2", world_size=2, samples_per_s=36.0, step_time_s=16 / 36.0)
    text = markdown(analyse([base, second], model=model))
    assert "50 GB/s per GPU" in text and "ZeRO-3's communication exceeds compute from 4 workers on" in text
    assert "frozen base" in text


def test_throughput_measures_steps_samples_tokens_and_time_to_first_step():
    from emorec.train.throughput import Throughput, batch_counts

    now = [100.0]
    tp = Throughput(warmup=1, clock=lambda: now[0])
    now[0] = 103.0  # model load, engine init
    tp.start()
    for seconds, save in ((2.0, 0.0), (0.5, 0.0), (0.5, 4.0), (0.7, 0.0)):
        now[0] += seconds
        tp.step(8, 800)
        with tp.paused():  # a checkpoint save: not step time
            now[0] += save
    s = tp.summary()
    assert s["time_to_first_step_s"] == pytest.approx(5.0) and s["setup_s"] == pytest.approx(3.0)
    assert s["first_step_s"] == pytest.approx(2.0) and s["measured_steps"] == 3
    assert s["step_time_s"] == pytest.approx(0.5) and s["step_time_mean_s"] == pytest.approx(1.7 / 3)
    assert s["samples_per_s"] == pytest.approx(24 / 1.7) and s["tokens_per_s"] == pytest.approx(2400 / 1.7)

    import torch

    batch = {"input_ids": torch.zeros(3, 5, dtype=torch.long),
             "attention_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])}
    assert batch_counts(batch) == (3, 9)
    from emorec.text.batches import Feature
    from emorec.train.batching import collate_packed

    feats = [Feature(0, [5, 6, 7], [8, 1]), Feature(1, [5, 9], [3, 1])]
    assert batch_counts(collate_packed(feats, 0, pad_to=16)) == (2, 9)  # two samples, filler not counted


def test_scaling_sweeps_are_recognised_and_run_one_job_at_a_time():
    from emorec.launch.concurrency import concurrency_for, is_scaling_sweep, scaling_warnings, worker_counts
    from emorec.launch.sweep_config import SweepConfig

    sweep = SweepConfig(datasets=["meld"], methods=["lora"], grid={"ray.workers": [4, 1, 2]})
    assert is_scaling_sweep(sweep) and worker_counts(sweep) == [1, 2, 4]
    assert concurrency_for(sweep, 3) == 1 and not scaling_warnings(sweep)
    assert scaling_warnings(sweep.model_copy(update={"max_concurrent": 2}))
    plain = SweepConfig(datasets=["meld"], methods=["lora"], grid={"train.lr": [1e-4, 1e-3]})
    assert not is_scaling_sweep(plain) and concurrency_for(plain, 3) == 3


# ---------------------------------------------------------------------------------------------------
# The real thing: a 1-vs-2-worker scaling sweep on CPU, then its report
# ---------------------------------------------------------------------------------------------------

@pytest.mark.distributed
@pytest.mark.slow
def test_scaling_sweep_one_vs_two_workers_produces_plot_and_table(tmp_path, fixtures_dir):
    out = tmp_path / "scaling"
    tiny = ("set={model.name: tiny-glm, prompt.max_length: 256, prompt.history: 1, train.micro_batch_size: 4, "
            "train.grad_accum: 1, train.max_steps: 6, train.save_every: 6, train.lr: 0.01, eval.batch_size: 64, "
            "data.max_eval_samples: 8, ray.cpus_per_worker: 0.5}")
    r = emorec("sweep", "configs/quickstart.yaml", "datasets=[carer]", "methods=[lora]", f"data_root={fixtures_dir}",
               f"output={out}", tiny, "grid={ray.workers: [1, 2]}", "max_concurrent=1", timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    by_name = {j["name"]: j for j in results["jobs"]}
    assert results["max_concurrent"] == 1
    for n in (1, 2):
        m = json.loads((out / f"carer_lora_workers{n}" / "metrics.json").read_text())
        assert m["world_size"] == n
        missing = [k for k in ("samples_per_s", "tokens_per_s", "step_time_s", "time_to_first_step_s",
                               "trainable_params", "total_params", "zero_stage") if k not in m]
        assert not missing, f"metrics.json lacks {missing}: the training loop must call emorec.report.scaling's hooks"
        assert by_name[f"carer_lora_workers{n}"]["status"] == "ok"
        assert (out / f"carer_lora_workers{n}" / "tensorboard").is_dir()

    r = emorec("report", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    _png_ok(out / "report" / "scaling.png")
    rows = list(csv.DictReader(io.StringIO((out / "report" / "scaling.csv").read_text())))
    measured = [x for x in rows if x["kind"] == "measured"]
    assert [int(x["workers"]) for x in measured] == [1, 2]
    assert float(measured[0]["speedup"]) == 1.0 and float(measured[1]["speedup"]) > 0
    assert "## Scaling" in (out / "report" / "report.md").read_text()


def test_scaling_groups_come_from_the_sweep_not_from_job_names():
    from emorec.launch.sweep_config import expand, load_sweep
    from emorec.report.scaling import scaling_groups

    jobs = expand(load_sweep(str(REPO / "configs/quickstart.yaml"),
                             ["datasets=[meld]", "methods=[lora]", "grid={ray.workers: [1, 2], train.lr: [0.1, 0.2]}"]))
    assert {j.name: j.scaling_group for j in jobs} == {
        "meld_lora_workers1_lr0.1": "meld_lora_lr0.1", "meld_lora_workers1_lr0.2": "meld_lora_lr0.2",
        "meld_lora_workers2_lr0.1": "meld_lora_lr0.1", "meld_lora_workers2_lr0.2": "meld_lora_lr0.2"}
    assert all(j.scaling_group is None for j in expand(load_sweep(str(REPO / "configs/quickstart.yaml"))))
    # Names say nothing: a user's own job names group by their recorded group, and a name that merely looks
    # like a scaling job's is not one.
    rows = [{"name": name, "world_size": n, "samples_per_s": 10.0 * n, "status": "ok", **extra}
            for name, n, extra in (("first-try", 1, {"scaling_group": "g"}), ("second-try", 2, {"scaling_group": "g"}),
                                   ("meld_lora_workers1", 1, {}), ("meld_lora_workers2", 2, {}))]
    assert {k: [r["name"] for r in v] for k, v in scaling_groups(rows).items()} == {"g": ["first-try", "second-try"]}



def assert_cites_papers(md: str) -> None:
    """Every published number in a report cites its paper by title and year; nothing points at a file users lack."""
    from emorec.report.published import PAPERS, PUBLISHED_BEST, PUBLISHED_CHATGLM2

    assert "REFERENCE" not in md
    for method in {m for *_, m in PUBLISHED_BEST.values()} | {m for *_, m in PUBLISHED_CHATGLM2.values()}:
        title, year = PAPERS[method]
        assert f'{method}: "{title}" ({year})' in md, method
