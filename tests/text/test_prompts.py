"""Prompts: the label set is named, recent turns come with speakers, old turns go first, the target stays whole."""

import pytest

from emorec.config import PromptConfig
from emorec.data.schema import DatasetSpec, Example, Turn
from emorec.model.families import tiny_tokenizer
from emorec.text.batches import IGNORE, MicroBatchOrder, collate, training_features
from emorec.text.prompts import encode_prompt, render

SPEC = DatasetSpec(name="toy", labels=("neu", "ang"), verbalisers={"neu": "neutral", "ang": "angry"},
                   metric="weighted_f1", dialogue=True, neutral="neu")
TURNS = tuple(Turn("A" if i % 2 else "B", f"turn number {i} with some words") for i in range(10))
TARGET = "the target utterance must stay whole " * 3
EX = Example(id="x", text=TARGET, labels=("ang",), speaker="A", context=TURNS)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_prompt_names_task_labels_speakers_and_window():
    text = render(EX, SPEC, TURNS[-3:])
    assert "<neutral, angry>" in text
    assert "B: turn number 7" not in text and "A: turn number 7" in text
    assert "turn number 6" not in text and "turn number 9" in text
    assert f'A: "{TARGET}"' in text


def test_window_size_is_configurable(tok):
    wide = encode_prompt(EX, SPEC, tok, PromptConfig(history=8, max_length=4096), budget=4096)
    narrow = encode_prompt(EX, SPEC, tok, PromptConfig(history=2, max_length=4096), budget=4096)
    assert (wide.context_turns, narrow.context_turns) == (8, 2)


def test_oldest_turns_dropped_first_and_target_never_cut(tok):
    full = encode_prompt(EX, SPEC, tok, PromptConfig(history=10), budget=10_000)
    budget = len(full.prompt_ids) - 10
    cut = encode_prompt(EX, SPEC, tok, PromptConfig(history=10), budget=budget)
    assert 0 < cut.context_turns < 10 and len(cut.prompt_ids) <= budget
    text = tok.decode(cut.prompt_ids)
    assert "turn number 0" not in text and "turn number 9" in text and TARGET in text
    tiny = encode_prompt(EX, SPEC, tok, PromptConfig(history=10), budget=5)
    assert tiny.context_turns == 0 and TARGET in tok.decode(tiny.prompt_ids)


def test_loss_falls_on_answer_tokens_only(tok):
    feats = training_features([EX, Example("y", "short", ("neu",), "B", ())], SPEC, tok, PromptConfig(history=2))
    batch = collate(feats, tok.pad_token_id)
    for row, f in enumerate(feats):
        labels = batch["labels"][row]
        supervised = labels[labels != IGNORE].tolist()
        assert supervised == f.answer_ids
        assert f.answer_ids[-1] == tok.eos_token_id
        assert tok.decode(f.answer_ids[:-1]) == SPEC.verbalisers[EX.labels[0] if row == 0 else "neu"]
    assert batch["attention_mask"][1].sum() == len(feats[1].prompt_ids) + len(feats[1].answer_ids)


def test_multi_label_example_teaches_each_label(tok):
    spec = DatasetSpec("ml", ("a", "b", "c"), {"a": "alpha", "b": "beta", "c": "gamma"}, "multilabel_macro_f1",
                       dialogue=False, multi_label=True)
    feats = training_features([Example("z", "text", ("a", "c"))], spec, tok, PromptConfig())
    assert [tok.decode(f.answer_ids[:-1]) for f in feats] == ["alpha", "gamma"]


def test_data_order_is_a_function_of_seed_epoch_and_rank():
    a = MicroBatchOrder(20, world=2, rank=0, micro_batch=3, seed=7)
    b = MicroBatchOrder(20, world=2, rank=1, micro_batch=3, seed=7)
    again = MicroBatchOrder(20, world=2, rank=0, micro_batch=3, seed=7)
    assert a.per_epoch == 3
    seen = [i for k in range(3) for i in a.indices(k)] + [i for k in range(3) for i in b.indices(k)]
    assert len(set(seen)) == 18
    assert [again.indices(k) for k in (5, 0, 4)] == [a.indices(k) for k in (5, 0, 4)]
    assert a.indices(0) != a.indices(3)
