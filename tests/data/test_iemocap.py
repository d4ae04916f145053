import re
from collections import Counter
from pathlib import Path

import pytest

from emorec.data import iemocap
from emorec.data.fixtures import iemocap as fixture
from emorec.data.schema import Turn
from emorec.errors import DataError

EVALUATION = """% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]

[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]
C-E2:\tNeutral;\t()
A-E3:\tval 3; act 2; dom  2;\t()

[8.5000 - 10.0000]\tSes01F_impro01_M000\txxx\t[2.5000, 3.0000, 3.0000]
C-E2:\tOther;\t()

[10.2000 - 12.0000]\tSes01F_impro01_M001\tang\t[2.0000, 3.5000, 3.5000]
C-E2:\tAnger;\t()

[13.0000 - 14.0000]\tSes01F_impro01_F001\tfru\t[2.0000, 3.5000, 3.5000]
"""
TRANSCRIPTION = """Ses01F_impro01_M001 [010.2000-012.0000]: Don't tell me that, señor.
Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.
Ses01F_impro01_MXX0 [009.0000-009.5000]: [LAUGHTER]
Ses01F_impro01_M000 [008.5000-010.0000]: Do you have your forms?
M: [BREATHING]
Ses01F_impro01_F002 [015.0000-016.0000]: Bye.
"""


def write_release(root: Path, evaluation: str = EVALUATION, transcription: str = TRANSCRIPTION) -> Path:
    """Session1 holds the dialogue under test; Sessions 2-5 one single-turn 'hap' dialogue each."""
    release = root / "IEMOCAP_full_release"
    for session in range(1, 6):
        name = "Ses01F_impro01" if session == 1 else f"Ses0{session}M_script01_1"
        dialog = release / f"Session{session}" / "dialog"
        (dialog / "EmoEvaluation").mkdir(parents=True)
        (dialog / "transcriptions").mkdir(parents=True)
        if session > 1:
            evaluation_text = f"[1.0000 - 2.0000]\t{name}_F000\thap\t[3.0, 3.0, 3.0]\n"
            transcription_text = f"{name}_F000 [001.0000-002.0000]: Hello there.\n"
        else:
            evaluation_text, transcription_text = evaluation, transcription
        (dialog / "EmoEvaluation" / f"{name}.txt").write_bytes(evaluation_text.encode("latin-1"))
        (dialog / "transcriptions" / f"{name}.txt").write_bytes(transcription_text.encode("latin-1"))
    return release


def test_hand_written_release_gives_exact_examples_context_and_quirk_counts(tmp_path):
    data = iemocap.load(str(write_release(tmp_path)), validation_share=0)

    session1 = [e for e in data.splits["train"] if e.id.startswith("Ses01F")]
    assert [(e.id, e.text, e.labels, e.speaker) for e in session1] == [
        ("Ses01F_impro01_F000", "Excuse me.", ("neu",), "F"),
        ("Ses01F_impro01_M001", "Don't tell me that, señor.", ("ang",), "M"),
    ]
    assert session1[0].context == ()
    assert session1[1].context == (Turn("F", "Excuse me."), Turn("M", "Do you have your forms?"))
    assert [e.id for e in data.splits["train"]] == ["Ses01F_impro01_F000", "Ses01F_impro01_M001"] + [
        f"Ses0{s}M_script01_1_F000" for s in (2, 3, 4)
    ]
    assert data.splits["validation"] == []
    assert [(e.id, e.labels) for e in data.splits["test"]] == [("Ses05M_script01_1_F000", ("hap",))]
    assert data.skipped == Counter(
        {"non-turn line": 2, "unused label xxx": 1, "no transcript": 1, "no evaluation": 1}
    )


def test_parent_of_release_and_url_paths_are_accepted(tmp_path):
    write_release(tmp_path)
    direct = iemocap.load(str(tmp_path / "IEMOCAP_full_release"))
    assert iemocap.load(str(tmp_path)).splits == direct.splits
    assert iemocap.load(f"file://{tmp_path}").splits == direct.splits


def recount(release: Path) -> tuple[dict[str, Counter], Counter]:
    """Labels of evaluated-and-transcribed turns per session group, and unused codes, read independently."""
    labels = {"train+validation": Counter(), "test": Counter()}
    unused = Counter()
    for evaluation in release.glob("Session*/dialog/EmoEvaluation/Ses*.txt"):
        transcript = evaluation.parent.parent / "transcriptions" / evaluation.name
        transcribed = set(re.findall(r"^(\S+_[FM]\d\d\d) \[", transcript.read_text("latin-1"), re.M))
        group = "test" if "Session5" in str(evaluation) else "train+validation"
        for turn_id, code in re.findall(r"^\[.*?\]\t(\S+)\t(\w+)\t", evaluation.read_text("latin-1"), re.M):
            if code in iemocap.UNUSED:
                unused[f"unused label {code}"] += 1
            elif turn_id in transcribed:
                labels[group][code] += 1
    return labels, unused


def test_fixture_split_sizes_and_label_counts_match_the_written_files(tmp_path):
    release = Path(fixture.write(str(tmp_path)))
    data = iemocap.load(str(release))
    labels, unused = recount(release)

    def count(*splits: str) -> Counter:
        return Counter(e.labels[0] for split in splits for e in data.splits[split])

    assert count("train", "validation") == labels["train+validation"]
    assert count("test") == labels["test"]
    assert 200 <= len(data.splits["train"]) <= 300
    assert 20 <= len(data.splits["validation"]) <= 60
    assert 50 <= len(data.splits["test"]) <= 100
    assert set(count("train")) == set(iemocap.SPEC.labels)
    assert {k: v for k, v in data.skipped.items() if k.startswith("unused")} == unused
    assert data.skipped["non-turn line"] > 0
    assert data.skipped["no transcript"] == data.skipped["no evaluation"] == 1
    assert any("é" in e.text or "ñ" in e.text for e in data.splits["train"] + data.splits["validation"])
    for split in data.splits.values():
        assert len({e.id for e in split}) == len(split)


def test_fixture_dialogues_keep_speakers_and_growing_context(tmp_path):
    data = iemocap.load(fixture.write(str(tmp_path)))
    examples = data.splits["train"] + data.splits["validation"] + data.splits["test"]
    for example in examples:
        assert example.speaker == example.id[-4]
    for before, after in zip(examples, examples[1:]):
        if before.id.rsplit("_", 1)[0] == after.id.rsplit("_", 1)[0]:
            seen = before.context + (Turn(before.speaker, before.text),)
            assert after.context[: len(seen)] == seen


def test_validation_is_whole_dialogues_drawn_by_seed(tmp_path):
    path = fixture.write(str(tmp_path))

    def dialogues(data, split: str) -> set[str]:
        return {e.id.rsplit("_", 1)[0] for e in data.splits[split]}

    first, again, other = iemocap.load(path, seed=1), iemocap.load(path, seed=1), iemocap.load(path, seed=2)
    assert first.splits == again.splits
    assert dialogues(first, "validation") != dialogues(other, "validation")
    assert not dialogues(first, "validation") & dialogues(first, "train")
    assert len(dialogues(first, "validation")) == 6
    assert len(dialogues(iemocap.load(path, validation_share=0.5), "validation")) == 28
    assert all(e.id.startswith("Ses05") for e in first.splits["test"])


def test_fixture_is_deterministic_per_seed(tmp_path):
    a = iemocap.load(fixture.write(str(tmp_path / "a"), seed=3)).splits
    b = iemocap.load(fixture.write(str(tmp_path / "b"), seed=3)).splits
    c = iemocap.load(fixture.write(str(tmp_path / "c"), seed=4)).splits
    assert a == b != c


BAD_EVALUATIONS = [
    ("unknown label", "[10.2000 - 12.0000]\tSes01F_impro01_M001\tjoy\t[2.0, 3.5, 3.5]",
     "label 'joy' of Ses01F_impro01_M001 is not one of hap, sad, neu, ang, exc, fru"),
    ("malformed evaluation line", "[10.2000 - twelve]\tSes01F_impro01_M001\tang\t[2.0, 3.5, 3.5]",
     "expected '[start - end]<TAB>turn id<TAB>label<TAB>[v, a, d]'"),
    ("malformed turn id", "[10.2000 - 12.0000]\tSes01F_impro01_X001\tang\t[2.0, 3.5, 3.5]",
     "turn id 'Ses01F_impro01_X001' does not end in _F or _M and a 3-digit number"),
]


@pytest.mark.parametrize("reason, line, expected", BAD_EVALUATIONS)
def test_bad_evaluation_line_names_file_line_and_expectation_or_is_counted(tmp_path, reason, line, expected):
    evaluation = EVALUATION.replace(EVALUATION.splitlines()[9], line)
    release = write_release(tmp_path, evaluation=evaluation)
    with pytest.raises(DataError) as error:
        iemocap.load(str(release))
    assert "EmoEvaluation/Ses01F_impro01.txt line 10: " in str(error.value)
    assert expected in str(error.value)

    data = iemocap.load(str(release), on_bad_row="skip")
    assert data.skipped[reason] == 1
    assert "Ses01F_impro01_M001" not in {e.id for e in data.splits["train"]}
    assert len(data.splits["train"]) == 4


def test_skipped_bad_label_keeps_the_turn_in_later_context(tmp_path):
    evaluation = EVALUATION.replace("M001\tang", "M001\tjoy")
    evaluation += "[16.0000 - 17.0000]\tSes01F_impro01_F002\tsad\t[2.0, 2.0, 2.0]\n"
    data = iemocap.load(str(write_release(tmp_path, evaluation=evaluation)), on_bad_row="skip")
    bye = next(e for e in data.splits["train"] if e.id == "Ses01F_impro01_F002")
    assert bye.context[-1] == Turn("M", "Don't tell me that, señor.")


def test_missing_session_or_transcription_names_what_was_expected(tmp_path):
    release = write_release(tmp_path / "a")
    (release / "Session1/dialog/transcriptions/Ses01F_impro01.txt").unlink()
    with pytest.raises(DataError, match=r"expected transcriptions/Ses01F_impro01\.txt next to EmoEvaluation"):
        iemocap.load(str(release))
    release = write_release(tmp_path / "b")
    (release / "Session3/dialog/EmoEvaluation/Ses03M_script01_1.txt").unlink()
    (release / "Session3/dialog/EmoEvaluation").rmdir()
    with pytest.raises(DataError, match=r"expected directory Session3/dialog/EmoEvaluation in "):
        iemocap.load(str(release))
    with pytest.raises(DataError, match=r"expected IEMOCAP_full_release .* in .*nowhere"):
        iemocap.load(str(tmp_path / "nowhere"))


def test_unknown_or_bad_options_are_refused(tmp_path):
    release = str(write_release(tmp_path))
    with pytest.raises(DataError, match="unknown option 'valid_share' for iemocap; allowed: validation_share"):
        iemocap.load(release, valid_share=0.2)
    with pytest.raises(DataError, match=r"validation_share must be a number in \[0, 1\), got 1.5"):
        iemocap.load(release, validation_share=1.5)
    with pytest.raises(DataError, match="on_bad_row must be 'error' or 'skip'"):
        iemocap.load(release, on_bad_row="ignore")
