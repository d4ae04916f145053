"""Bad runs (issue 13, classes 5-7): prompts that blow up in time or memory, a stale Ray address, DeepSpeed and report
files of the wrong shape, and filesystems that connect before Ray hides the credentials."""

import json
import logging
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CHATGLM_REFERENCE, REPO, SECRET, clean_env, emorec, free_port, make_bucket_elsewhere, s3_env, write_config

from emorec.config import PromptConfig
from emorec.data import load_dataset
from emorec.data.schema import DatasetSpec, Example, Turn
from emorec.errors import ConfigError, EmorecError
from emorec.text.batches import training_features
from emorec.text.prompts import chat_ids, encode_prompt, render

# ---------------------------------------------------------------------------------------------------
# Class 5: prompts in O(turns), huge utterances cut, a stale Ray address fails at once
# ---------------------------------------------------------------------------------------------------

SPEC = DatasetSpec(name="toy", labels=("neu", "ang", "joy"), verbalisers={"neu": "neutral", "ang": "angry",
                                                                       "joy": "happy"},
                   metric="weighted_f1", dialogue=True, neutral="neu")
FLAT = DatasetSpec(name="flat", labels=("sad", "joy"), verbalisers={"sad": "sad", "joy": "happy"},
                   metric="accuracy", dialogue=False)
TEMPLATE = "[gMASK]<sop>{% for m in messages %}<|user|>\n{{ m['content'] }}{% endfor %}<|assistant|>"


class Counting:
    """A tokenizer that counts how often it tokenises (a call, or a chat template applied)."""

    def __init__(self, tok):
        self._tok, self.calls = tok, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self._tok(*args, **kwargs)

    def apply_chat_template(self, *args, **kwargs):
        self.calls += 1
        return self._tok.apply_chat_template(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tok, name)


def old_encode(example, spec, tokenizer, cfg, budget):
    """The algorithm before the fix: one whole tokenisation per dropped turn."""
    window = min(cfg.history, len(example.context)) if spec.dialogue else 0
    while True:
        context = example.context[len(example.context) - window:] if window else ()
        ids = chat_ids(tokenizer, render(example, spec, context))
        if len(ids) <= budget or window == 0:
            return ids, window
        window -= 1


@pytest.fixture(scope="module")
def tokenizers():
    from emorec.model.chatglm_tokenizer import chatglm_tokenizer
    from emorec.model.families import tiny_tokenizer

    templated = tiny_tokenizer()
    templated.chat_template = TEMPLATE
    return {"plain": tiny_tokenizer(), "template": templated,
            "chatglm2": chatglm_tokenizer(str(CHATGLM_REFERENCE / "chatglm2-tiny"), 2),
            "chatglm3": chatglm_tokenizer(str(CHATGLM_REFERENCE / "chatglm3-tiny"), 3)}


def _words(n: int, seed: int) -> str:
    from emorec.data.fixtures.text import corpus

    rng = random.Random(seed)
    vocab = " ".join(corpus()).split()
    return " ".join(rng.choice(vocab) for _ in range(n))


def _dialogue(turns: int, seed: int = 0) -> Example:
    rng = random.Random(seed)
    context = tuple(Turn(rng.choice(["Ann", "Bob", None]), _words(rng.randint(3, 14), seed * 1000 + i))
                    for i in range(turns))
    return Example("long", _words(12, seed + 7), ("ang",), "Ann", context)


def test_500_turn_dialogue_with_history_500_tokenises_a_few_times_not_once_per_dropped_turn(tokenizers):
    ex = _dialogue(500)
    cfg = PromptConfig(history=500, max_length=256)
    for fmt in ("plain", "chatglm2"):
        tok = Counting(tokenizers[fmt])
        started = time.perf_counter()
        got = encode_prompt(ex, SPEC, tok, cfg, budget=250)
        elapsed = time.perf_counter() - started
        want_ids, want_window = old_encode(ex, SPEC, tokenizers[fmt], cfg, 250)
        assert (got.prompt_ids, got.context_turns) == (want_ids, want_window), fmt
        assert 0 < got.context_turns < 100 and len(got.prompt_ids) <= 250
        # The old way tokenised the prompt once per dropped turn: ~480 times here.
        assert tok.calls <= 6, (fmt, tok.calls)
        assert elapsed < 5, elapsed


def test_window_and_ids_equal_the_old_algorithm_on_the_fixtures_for_every_chat_format(fixtures_dir, tokenizers):
    """Every budget between "no context fits" and "the whole window fits", on fixture dialogues and on long synthetic
    ones, in all four chat formats: the same window and the very same ids as one tokenisation per dropped turn."""
    cases = []
    for name in ("iemocap", "meld", "emorynlp", "dailydialog"):
        ds = load_dataset(name, str(fixtures_dir / name))
        cases += [(ds.spec, ex, 8) for ex in ds.splits["train"] if ex.context][:12]
    cases += [(SPEC, _dialogue(n, seed=n), n) for n in (30, 80)]
    checked = 0
    for fmt, tok in tokenizers.items():
        for spec, ex, history in cases:
            cfg = PromptConfig(history=history, max_length=4096)
            longest = len(old_encode(ex, spec, tok, cfg, 10**9)[0])
            shortest = len(chat_ids(tok, render(ex, spec, ())))
            rng = random.Random(longest)
            budgets = {shortest, shortest + 1, (shortest + longest) // 2, longest - 1, longest,
                       *(rng.randint(shortest, longest) for _ in range(3))}
            for budget in sorted(budgets):
                got = encode_prompt(ex, spec, tok, cfg, budget)
                assert (got.prompt_ids, got.context_turns) == old_encode(ex, spec, tok, cfg, budget), \
                    (fmt, spec.name, ex.id, budget)
                assert got.target_cut == 0 and not got.over_budget
                checked += 1
    assert checked > 300


def _huge(chars: int = 100_000) -> str:
    head, tail = "FIRSTWORDS begin here.", "and these are the last words before the end"
    body = _words(chars // 5, seed=3)
    return f"{head} {body[: chars - len(head) - len(tail) - 2]} {tail}"


@pytest.mark.parametrize("fmt", ["plain", "chatglm3"])
def test_a_100k_character_utterance_is_cut_to_max_length_keeping_its_end(tokenizers, fmt):
    from emorec.text.batches import encode_all

    tok = Counting(tokenizers[fmt])
    text = _huge()
    assert len(text) >= 99_000
    cfg = PromptConfig(history=4, max_length=256)
    examples = [Example("big", text, ("joy",)), Example("small", "a short one", ("sad",))]
    out = encode_all(examples, FLAT, tok, cfg)
    longest = max(len(a) for a in out.answers.values())
    big, small = out.prompts
    assert len(big) + longest <= 256 and len(big) > 200  # cut to the budget, not far below it
    decoded = tokenizers[fmt].decode(big)
    assert "the last words before the end" in decoded and "FIRSTWORDS" not in decoded
    assert "Please select" in decoded and "<sad, happy>" in decoded  # the instruction and labels are kept whole
    assert small == chat_ids(tokenizers[fmt], render(examples[1], FLAT, ()))
    assert out.cut == 1
    assert tok.calls <= 12, tok.calls
    feats = training_features(examples, FLAT, tokenizers[fmt], cfg)
    assert max(len(f.prompt_ids) + len(f.answer_ids) for f in feats) <= 256


def test_a_huge_target_in_a_dialogue_drops_all_context_then_is_cut_and_the_cut_is_logged(tokenizers, caplog):
    from emorec.text.batches import encode_all

    tok = tokenizers["plain"]
    ex = Example("big", _huge(20_000), ("ang",), "Ann", _dialogue(40).context)
    fine = _dialogue(5, seed=2)
    enc = encode_prompt(ex, SPEC, tok, PromptConfig(history=40), budget=200)
    assert enc.context_turns == 0 and 0 < enc.target_cut and len(enc.prompt_ids) <= 200
    assert "the last words before the end" in tok.decode(enc.prompt_ids)
    with caplog.at_level(logging.WARNING, logger="emorec.text.batches"):
        out = encode_all([ex, fine, ex], SPEC, tok, PromptConfig(history=40, max_length=256))
    assert out.cut == 2
    assert any("2 of 3 toy examples" in r.getMessage() and "prompt.max_length=256" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_a_max_length_too_small_for_the_prompt_template_is_a_config_error(fixtures_dir, tokenizers):
    from emorec.text.batches import encode_all

    ds = load_dataset("goemotions", str(fixtures_dir / "goemotions"))  # 28 labels: a long template
    with pytest.raises(ConfigError, match=r"prompt\.max_length=32 is too small for goemotions.*at least \d+"):
        encode_all(ds.splits["train"][:3], ds.spec, tokenizers["plain"], PromptConfig(max_length=32))


def _stale_env() -> tuple[dict, str]:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    env = {k: v for k, v in clean_env().items() if not k.startswith(("AWS_", "RAY_ADDRESS", "RAY_API_SERVER"))}
    env.update(RAY_ADDRESS=address, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
    return env, address


def _run(args, env, timeout=90):
    started = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "emorec.cli", *args], capture_output=True, text=True, timeout=timeout,
                       cwd=REPO, env=env)
    return r, time.perf_counter() - started


def _one_line_error(r) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("emorec: error:")]
    assert len(errors) == 1, r.stderr[-2000:]
    return errors[0]


def test_sweep_with_a_stale_ray_address_fails_at_once_naming_it(fixtures_dir):
    env, address = _stale_env()
    r, elapsed = _run(["sweep", "configs/quickstart.yaml", f"data_root={fixtures_dir}"], env)
    line = _one_line_error(r)
    assert f"RAY_ADDRESS={address}" in line and "cannot reach" in line, line
    assert elapsed < 40, elapsed


def test_submit_with_a_stale_ray_address_fails_at_once_naming_it(fixtures_dir):
    env, address = _stale_env()
    args = ["submit", "configs/quickstart.yaml", "output=s3://bucket/run", f"data_root={fixtures_dir}"]
    r, elapsed = _run(args, env)
    line = _one_line_error(r)
    assert f"RAY_ADDRESS={address}" in line and "cannot reach" in line, line
    assert elapsed < 40, elapsed
    # --address wins over a stale RAY_ADDRESS, and is named when it is the stale one.
    dashboard = f"http://127.0.0.1:{free_port()}"
    r, elapsed = _run(["submit", "--address", dashboard, *args[1:]], env)
    line = _one_line_error(r)
    assert f"--address={dashboard}" in line and address not in line, line
    assert elapsed < 40, elapsed


def test_check_reachable_is_one_bounded_connect_that_names_the_address():
    import socket

    from emorec.launch.ray_jobs import check_reachable

    with socket.socket() as listening:  # a live listener passes
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        port = listening.getsockname()[1]
        check_reachable(f"127.0.0.1:{port}", "RAY_ADDRESS", timeout=2)
        check_reachable(f"http://127.0.0.1:{port}", "--address", timeout=2)
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"RAY_ADDRESS=ray://127\.0\.0\.1:{port}: cannot reach"):
        check_reachable(f"ray://127.0.0.1:{port}", "RAY_ADDRESS", timeout=2)
    assert time.perf_counter() - started < 3
    for bad in ("127.0.0.1:notaport", "ftp://127.0.0.1:21", "http://:8265"):
        with pytest.raises(ConfigError, match="Ray address"):
            check_reachable(bad, "RAY_ADDRESS", timeout=1)
    check_reachable("local", "RAY_ADDRESS")  # Ray's own words: nothing to probe


# ---------------------------------------------------------------------------------------------------
# Class 6: a DeepSpeed JSON and report files of the wrong shape
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, expected", [
    ('[{"zero_optimization": {"stage": 2}}]', "expected a JSON object"),
    ("zero_optimization: {stage: 2}\n", "not valid JSON"),
    (b"\xff\xfe{\x00}\x00", "not a UTF-8 text file"),
    ('{"zero_optimization": 2}', "'zero_optimization' must be a JSON object"),
    ('{"optimizer": {"type": "AdamW", "params": ["auto"]}}', "'optimizer.params' must be a JSON object"),
    ('{"zero_optimization": {"stage": "two"}}', "zero_optimization.stage must be 0-3"),
])
def test_a_deepspeed_json_of_the_wrong_shape_is_a_config_error_naming_the_file(tmp_path, content, expected):
    from emorec.config import RunConfig
    from emorec.train.engine import fill_ds_config, read_ds_config

    path = tmp_path / "ds.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    cfg = RunConfig.model_validate({"data": {"dataset": "carer", "path": "x"}})
    with pytest.raises(ConfigError) as e:
        fill_ds_config(read_ds_config(str(path)), cfg, 1, bf16=False)
    assert expected in str(e.value) and "train.deepspeed" in str(e.value) and str(path) in str(e.value)


def test_emorec_train_with_a_deepspeed_list_fails_in_one_line_naming_the_file(tmp_path, fixtures_dir):
    ds = tmp_path / "zero-list.json"
    ds.write_text(json.dumps([{"zero_optimization": {"stage": 2}}]))
    cfg = write_config(tmp_path / "run.yaml", fixtures_dir, "carer", "lora", output=str(tmp_path / "out"),
                       train={"deepspeed": str(ds), "max_steps": 2})
    r = emorec("train", str(cfg), "--no-progress", timeout=180)
    line = _one_line_error(r)
    assert str(ds) in line and "expected a JSON object" in line and "array" in line, line


METRICS = {"name": "carer_lora", "dataset": "carer", "method": "lora", "split": "test", "metric": "accuracy",
           "primary": "accuracy", "value": 0.5, "values": {"accuracy": 0.5}, "labels": ["sadness", "joy"],
           "confusion_matrix": [[2, 1], [1, 2]], "n": 6, "steps": 4, "world_size": 1}


def _run_dir(root: Path, metrics, curve=((1, 2.0), (2, 1.5))) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "metrics.json").write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))
    (root / "train_curve.json").write_text(json.dumps([list(p) for p in curve]))
    return root


def _sweep_dir(root: Path, results, jobs=("carer_lora",)) -> Path:
    for job in jobs:
        _run_dir(root / job, METRICS | {"name": job})
    (root / "results.json").write_text(results if isinstance(results, str) else json.dumps(results))
    return root


def _report_error(path: Path, tmp_path: Path) -> str:
    from emorec.report.build import build_report

    with pytest.raises(EmorecError) as e:
        build_report(str(path), str(tmp_path / "report-out"), tensorboard=False)
    assert not (tmp_path / "report-out").exists(), "nothing is written before the inputs are checked"
    return str(e.value)


@pytest.mark.parametrize("metrics, key", [
    ([METRICS], "expected a JSON object of run metrics, got an array"),
    ("[1, 2", "not valid JSON"),
    ("null", "holds JSON null"),
    (METRICS | {"value": "high"}, "key 'value' must be a number"),
    (METRICS | {"n": "six"}, "key 'n' must be a whole number"),
    (METRICS | {"values": [0.5]}, "key 'values' must be an object"),
    (METRICS | {"labels": "sadness,joy"}, "key 'labels' must be an array of label names"),
    (METRICS | {"samples_per_s": {"mean": 3}}, "key 'samples_per_s' must be a number"),
])
def test_report_on_a_metrics_json_of_the_wrong_shape_names_the_file_and_key(tmp_path, metrics, key):
    run = _run_dir(tmp_path / "run", metrics)
    message = _report_error(run, tmp_path)
    assert str(run / "metrics.json") in message and key in message, message


@pytest.mark.parametrize("results, key", [
    ([{"name": "carer_lora", "status": "ok"}], "expected a JSON object {\"jobs\": [...], ...}, got an array"),
    ({"jobs": {"carer_lora": {}}}, "key 'jobs' must be an array of job rows"),
    ({"jobs": ["carer_lora"]}, "key 'jobs[0]' must be a JSON object"),
    ({"jobs": [{"name": "carer_lora", "status": "ok", "value": [0.5]}]}, "key 'jobs[0].value' must be a number"),
    ({"jobs": [{"name": "../../elsewhere", "status": "ok"}]}, "key 'jobs[0].name' must be a job name"),
    ({"jobs": [{"name": "carer_lora", "status": "ok"}], "makespan_s": "long"}, "key 'makespan_s' must be a number"),
])
def test_report_on_a_results_json_of_the_wrong_shape_names_the_file_and_key(tmp_path, results, key):
    sweep = _sweep_dir(tmp_path / "sweep", results)
    message = _report_error(sweep, tmp_path)
    assert str(sweep / "results.json") in message and key in message, message


def test_report_names_a_job_metrics_file_a_confusion_matrix_or_a_curve_of_the_wrong_shape(tmp_path):
    sweep = _sweep_dir(tmp_path / "sweep", {"jobs": [{"name": "a", "status": "ok"}, {"name": "b", "status": "ok"}]},
                       jobs=("a", "b"))
    (sweep / "b" / "metrics.json").write_text(json.dumps(METRICS | {"confusion_matrix": [[1, 2, 3]]}))
    message = _report_error(sweep, tmp_path)
    assert str(sweep / "b" / "metrics.json") in message and "'confusion_matrix' must be a 2 x 2" in message, message

    (sweep / "b" / "metrics.json").write_text(json.dumps(METRICS))
    (sweep / "a" / "train_curve.json").write_text(json.dumps([[1, 2.0], [2]]))
    message = _report_error(sweep, tmp_path)
    assert str(sweep / "a" / "train_curve.json") in message and "[step, loss] pairs" in message, message


def test_emorec_report_on_wrong_shapes_fails_in_one_line_and_on_the_right_shape_writes_the_report(tmp_path):
    run = _run_dir(tmp_path / "run", [METRICS])
    line = _one_line_error(emorec("report", str(run), "--no-tensorboard", timeout=120))
    assert str(run / "metrics.json") in line and "got an array" in line, line

    good = _run_dir(tmp_path / "good", METRICS)
    r = emorec("report", str(good), "--no-tensorboard", timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| carer_lora | carer | lora | 1 | accuracy | 50.00 |" in (good / "report" / "report.md").read_text()


# ---------------------------------------------------------------------------------------------------
# Class 7: credentials only in the environment (the whole sweep: tests/launch/test_ray_s3.py)
# ---------------------------------------------------------------------------------------------------

def test_hidden_from_ray_connects_the_filesystems_ray_will_use_before_taking_the_credentials(s3_endpoint, monkeypatch):
    import s3fs
    from botocore.exceptions import NoCredentialsError

    from emorec.io.secrets import hidden_from_ray

    env = s3_env(s3_endpoint)
    for key in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_EC2_METADATA_DISABLED"):
        monkeypatch.setenv(key, env[key])
    make_bucket_elsewhere("emorec-hidden", env)
    used = s3fs.S3FileSystem(skip_instance_cache=True)  # made with the credentials present, not yet connected
    other = s3fs.S3FileSystem(skip_instance_cache=True)
    with hidden_from_ray(used) as captured:
        assert "AWS_SECRET_ACCESS_KEY" not in os.environ and captured["AWS_SECRET_ACCESS_KEY"] == SECRET
        used.pipe("emorec-hidden/probe", b"ok")
        assert used.cat("emorec-hidden/probe") == b"ok"
        with pytest.raises(NoCredentialsError):  # what every filesystem connected only now meets
            other.ls("emorec-hidden")
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == SECRET
