import json
import subprocess
import sys

from conftest import REPO

from emorec.bench.model import parse_generated

ROW_KEYS = {"task", "method", "system", "samples_per_s", "tokens_per_s", "mfu_measured", "mfu_989", "peak_mem_gb",
            "vs_baseline", "seconds", "samples"}


def test_quick_cpu_bench_prints_table_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "emorec", "bench", "--quick", "--out", str(out)], capture_output=True,
                          text=True, timeout=240, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "samples/s" in proc.stdout and "MFU" in proc.stdout
    result = json.loads(out.read_text())
    top = {"device", "model", "base_params", "matmul_peak_tflops", "flops_per_token", "settings", "rows"}
    assert top <= set(result)
    cells = {(r["task"], r["method"], r["system"]) for r in result["rows"]}
    assert cells == {(t, m, s) for t in ("train", "eval") for m in ("lora", "ptuning") for s in ("baseline", "emorec")}
    for row in result["rows"]:
        assert ROW_KEYS <= set(row) and row["samples_per_s"] > 0 and row["vs_baseline"] > 0
        assert row["mfu_989"] is None
        if row["system"] == "baseline":
            assert row["vs_baseline"] == 1.0


def test_parse_generated_takes_first_label_else_nearest():
    answers = [[5, 6, 1], [7, 1], [9, 9, 1]]
    assert parse_generated([3, 7, 5, 6], answers) == 1
    assert parse_generated([5, 6, 7], answers) == 0
    assert parse_generated([9, 8, 2, 2], answers) == 2
    assert parse_generated([7, 1, 5, 6], answers) == 1
    assert parse_generated([1, 5, 6], answers) in (0, 1, 2)


def test_isolation_check_passes_real_packing_and_catches_a_leaking_mask(monkeypatch):
    import torch
    from conftest import tiny_peft

    from emorec.bench.isolation import isolation_check
    from emorec.model import packed_lm as packing
    from emorec.text.batches import Feature

    g = torch.Generator().manual_seed(0)
    features = [Feature(i, torch.randint(2, 1000, (n,), generator=g).tolist(), [5, 7, 1])
                for i, n in enumerate((9, 14, 6, 11, 8, 12))]
    for method in ("lora", "ptuning"):
        good = isolation_check(packing.PackedCausalLM(tiny_peft(method)), features, 0, torch.device("cpu"))
        assert good["ok"] and good["leak"] == 0.0 and good["argmax_agreement"] == 1.0, good

    from emorec.train import batching

    real = packing.block_causal_mask  # collate_packed (emorec.train.batching) builds the mask it is given
    monkeypatch.setattr(batching, "block_causal_mask", lambda seq, p=0, b=None: real(torch.zeros_like(seq), p))
    bad = isolation_check(packing.PackedCausalLM(tiny_peft("lora")), features, 0, torch.device("cpu"))
    assert not bad["ok"] and bad["leak"] > 1e-2, bad


def test_bench_upload_without_moto_says_how_to_get_it(monkeypatch, capsys):
    import sys

    from emorec.cli import main

    monkeypatch.setitem(sys.modules, "moto", None)  # as on an install without the dev extra
    monkeypatch.setitem(sys.modules, "moto.server", None)
    assert main(["bench-upload", "--start-moto", "--mb", "1", "--files", "1", "--rounds", "1"]) == 2
    err = capsys.readouterr().err
    assert "emorec[dev]" in err and "--start-moto" in err and "Traceback" not in err


def test_bench_upload_to_a_local_folder_writes_its_figures(tmp_path, capsys):
    from emorec.cli import main

    out = tmp_path / "figures.json"
    assert main(["bench-upload", "--url", f"file://{tmp_path / 'store'}", "--mb", "1", "--files", "2", "--rounds", "2",
                 "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["rounds"] == 2 and len(figures["raw_put_s"]) == len(figures["emorec_upload_s"]) == 2
    assert figures["raw_mb_s"] > 0 and figures["emorec_mb_s"] > 0 and "ratio" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "store" / "raw-1").iterdir()) == sorted(
        p.name for p in (tmp_path / "store" / "raw-0").iterdir())
