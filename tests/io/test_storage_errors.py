"""A storage endpoint that keeps failing: the error fits the operation, and an outage never passes for a corrupt
checkpoint."""

import json

import pytest

from emorec.dist import SINGLE
from emorec.errors import CheckpointError, StorageError
from emorec.io.storage import open_store
from emorec.train.checkpoint import Checkpointer


class Down:
    """Wraps a store's filesystem: every open fails as a dropped connection would."""

    def __init__(self, fs):
        self._fs = fs

    def open(self, *a, **k):
        raise ConnectionResetError("connection reset by peer")

    def __getattr__(self, name):
        return getattr(self._fs, name)


def _down(url: str, **policy):
    store = open_store(url, retries=2, backoff_s=0.0, **policy)
    store.fs = Down(store.fs)
    store.is_local = False  # go through fs.open, as on object storage
    return store


def test_report_eval_and_predict_writes_say_to_run_the_command_again(tmp_path):
    with pytest.raises(StorageError) as e:
        _down(str(tmp_path / "report")).write_json("report.json", {})
    msg = str(e.value)
    assert "failed after 2 attempts" in msg and "Run the command again once it is back" in msg
    assert "resume" not in msg and "checkpoint" not in msg.lower()


def test_a_training_runs_storage_says_its_checkpoints_are_intact(tmp_path):
    with pytest.raises(StorageError) as e:
        _down(str(tmp_path / "run"), training=True).read_json("metrics.json")
    assert "Completed checkpoints are intact: re-run with resume=auto" in str(e.value)


def test_an_outage_while_verifying_is_not_a_corrupt_checkpoint_to_skip(tmp_path):
    run = tmp_path / "run"
    for step in (1, 2):
        tag = run / "checkpoints" / f"step-{step:07d}"
        tag.mkdir(parents=True)
        (tag / "trainer_state.json").write_text(json.dumps({"step": step}))
        (tag / "MANIFEST.json").write_text(json.dumps({"files": {"trainer_state.json": {"size": 1, "sha256": "0"}},
                                                       "world_size": 1, "step": step}))
    store = _down(str(run), training=True)
    ckpt = Checkpointer(store, SINGLE, str(tmp_path / "scratch"), keep_last=2)
    with pytest.raises(Exception) as e:
        ckpt.resolve("auto")
    assert not isinstance(e.value, CheckpointError), e.value  # resume=auto must not fall back past an outage
    assert isinstance(e.value, StorageError)
