import json
from collections import Counter
from pathlib import Path

import pytest

from emorec.data import emorynlp
from emorec.data.fixtures import emorynlp as fixture
from emorec.data.schema import Turn
from emorec.errors import DataError

TRAIN = """{
  "episodes": [
    {
      "episode_id": "s01_e01",
      "scenes": [
        {
          "scene_id": "s01_e01_c01",
          "utterances": [
            {"utterance_id": "s01_e01_c01_u001", "speakers": ["Ann Lee"], "transcript": "Hi there!",
             "tokens": [["Hi", "there", "!"]], "emotion": "Joyful"},
            {"utterance_id": "s01_e01_c01_u002", "speakers": ["Bo Chen", "Cy Diaz"], "transcript": "Hey.",
             "tokens": [["Hey", "."]], "emotion": "Neutral"},
            {"utterance_id": "s01_e01_c01_u003", "speakers": [], "transcript": "Go away!",
             "tokens": [["Go", "away", "!"]], "emotion": "Mad"}
          ]
        },
        {
          "scene_id": "s01_e01_c02",
          "utterances": [
            {"utterance_id": "s01_e01_c02_u001", "speakers": ["Ann Lee"], "transcript": "Sorry.",
             "tokens": [["Sorry", "."]], "emotion": "Sad"}
          ]
        }
      ]
    }
  ]
}
"""
SMALL = json.dumps({"episodes": [{"episode_id": "s02_e01", "scenes": [{"scene_id": "s02_e01_c01", "utterances": [
    {"utterance_id": "s02_e01_c01_u001", "speakers": ["Di"], "transcript": "Calm.", "tokens": [], "emotion": "Peaceful"}
]}]}]})


def write_files(directory: Path, train: str = TRAIN, dev: str = SMALL, test: str = SMALL) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in zip(emorynlp.FILES.values(), (train, dev, test)):
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def test_hand_written_files_give_exact_scenes_speakers_and_context(tmp_path):
    data = emorynlp.load(str(write_files(tmp_path)))

    train = data.splits["train"]
    assert [(e.id, e.text, e.labels, e.speaker) for e in train] == [
        ("s01_e01_c01_u001", "Hi there!", ("Joyful",), "Ann Lee"),
        ("s01_e01_c01_u002", "Hey.", ("Neutral",), "Bo Chen & Cy Diaz"),
        ("s01_e01_c01_u003", "Go away!", ("Mad",), None),
        ("s01_e01_c02_u001", "Sorry.", ("Sad",), "Ann Lee"),
    ]
    assert train[2].context == (Turn("Ann Lee", "Hi there!"), Turn("Bo Chen & Cy Diaz", "Hey."))
    assert train[3].context == ()
    assert [(e.id, e.labels) for e in data.splits["validation"]] == [("s02_e01_c01_u001", ("Peaceful",))]
    assert len(data.splits["test"]) == 1
    assert data.skipped == Counter()


def recount(path: Path) -> Counter:
    scenes = json.loads(path.read_text(encoding="utf-8"))["episodes"]
    return Counter(u["emotion"] for episode in scenes for scene in episode["scenes"] for u in scene["utterances"])


def test_fixture_split_sizes_and_label_counts_match_the_written_files(tmp_path):
    path = Path(fixture.write(str(tmp_path)))
    data = emorynlp.load(str(path))
    for split, name in emorynlp.FILES.items():
        assert Counter(e.labels[0] for e in data.splits[split]) == recount(path / name)
        assert len({e.id for e in data.splits[split]}) == len(data.splits[split])
    assert 150 <= len(data.splits["train"]) <= 250
    assert 30 <= len(data.splits["validation"]) <= 60
    assert 60 <= len(data.splits["test"]) <= 100
    assert set(e.labels[0] for e in data.splits["train"]) == set(emorynlp.SPEC.labels)
    assert data.skipped == Counter()


def test_fixture_scenes_keep_order_speakers_and_context(tmp_path):
    path = Path(fixture.write(str(tmp_path)))
    data = emorynlp.load(str(path))
    episodes = json.loads((path / emorynlp.FILES["train"]).read_text(encoding="utf-8"))["episodes"]
    expected = []
    for episode in episodes:
        for scene in episode["scenes"]:
            turns = [
                (u["utterance_id"], " & ".join(u["speakers"]) or None, u["transcript"]) for u in scene["utterances"]
            ]
            for i, (utterance_id, speaker, text) in enumerate(turns):
                context = tuple(Turn(s, t) for _, s, t in turns[:i])
                expected.append((utterance_id, speaker, text, context))
    assert [(e.id, e.speaker, e.text, e.context) for e in data.splits["train"]] == expected
    speakers = {e.speaker for e in data.splits["train"]}
    assert None in speakers
    assert any(s and " & " in s for s in speakers)


def test_fixture_is_deterministic_per_seed(tmp_path):
    a = emorynlp.load(fixture.write(str(tmp_path / "a"), seed=3)).splits
    b = emorynlp.load(fixture.write(str(tmp_path / "b"), seed=3)).splits
    c = emorynlp.load(fixture.write(str(tmp_path / "c"), seed=4)).splits
    assert a == b != c


BAD_UTTERANCES = [
    ("unknown emotion", '"emotion": "Joyful"', '"emotion": "Happy"',
     "utterance s01_e01_c01_u001: emotion 'Happy' is not one of Joyful, Mad, Peaceful, Neutral, Sad, Powerful, Scared"),
    ("malformed utterance", ', "emotion": "Joyful"', "",
     "utterance s01_e01_c01_u001 has no str 'emotion'; expected keys utterance_id, speakers, transcript, emotion"),
    ("malformed utterance", '"speakers": ["Ann Lee"]', '"speakers": "Ann Lee"',
     "utterance s01_e01_c01_u001 has no list 'speakers'"),
    ("empty transcript", '"transcript": "Hi there!"', '"transcript": " "',
     "utterance s01_e01_c01_u001 has an empty transcript"),
    ("duplicate id", '"utterance_id": "s01_e01_c01_u002"', '"utterance_id": "s01_e01_c01_u001"',
     "utterance s01_e01_c01_u001 appears twice"),
]


@pytest.mark.parametrize("reason, old, new, expected", BAD_UTTERANCES)
def test_bad_utterance_names_file_id_and_expectation_or_is_counted(tmp_path, reason, old, new, expected):
    train = TRAIN.replace(old, new, 1)
    assert train != TRAIN
    path = str(write_files(tmp_path, train=train))
    with pytest.raises(DataError) as error:
        emorynlp.load(path)
    assert "emotion-detection-trn.json: " in str(error.value)
    assert expected in str(error.value)

    data = emorynlp.load(path, on_bad_row="skip")
    assert data.skipped == Counter({reason: 1})
    assert len(data.splits["train"]) == 3


def test_skipped_unknown_emotion_keeps_the_turn_in_later_context(tmp_path):
    train = TRAIN.replace('"emotion": "Neutral"', '"emotion": "Bored"')
    data = emorynlp.load(str(write_files(tmp_path, train=train)), on_bad_row="skip")
    go_away = next(e for e in data.splits["train"] if e.id == "s01_e01_c01_u003")
    assert go_away.context[-1] == Turn("Bo Chen & Cy Diaz", "Hey.")


def test_invalid_json_names_file_and_line(tmp_path):
    broken = TRAIN.replace('"scene_id": "s01_e01_c02",', '"scene_id": "s01_e01_c02",,')
    with pytest.raises(DataError, match=r"emotion-detection-trn\.json line 18: invalid JSON: Expecting"):
        emorynlp.load(str(write_files(tmp_path, train=broken)))


def test_malformed_structure_or_missing_file_names_what_was_expected(tmp_path):
    with pytest.raises(DataError, match=r'emotion-detection-dev\.json: expected a top-level object \{"episodes"'):
        emorynlp.load(str(write_files(tmp_path / "a", dev="[]")))
    no_scenes = json.dumps({"episodes": [{"episode_id": "s02_e09"}]})
    with pytest.raises(DataError, match=r"emotion-detection-tst\.json: episode s02_e09 has no 'scenes' list"):
        emorynlp.load(str(write_files(tmp_path / "b", test=no_scenes)))
    data = emorynlp.load(str(tmp_path / "b"), on_bad_row="skip")
    assert data.skipped == Counter({"malformed episode": 1})
    (tmp_path / "b" / "emotion-detection-tst.json").unlink()
    with pytest.raises(DataError, match=r"expected emotion-detection-tst\.json in .*/b"):
        emorynlp.load(str(tmp_path / "b"))


def test_unknown_option_is_refused(tmp_path):
    with pytest.raises(DataError, match="unknown option 'seed_share' for emorynlp; allowed: none"):
        emorynlp.load(str(write_files(tmp_path)), seed_share=1)
