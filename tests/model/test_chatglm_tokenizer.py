"""The fast ChatGLM tokenizer gives THUDM's ids, pieces and decodes, and survives save/reload."""

import json
from functools import cache
from pathlib import Path

import pytest
from conftest import CHATGLM_REFERENCE as REF
from transformers import AutoTokenizer

from emorec.errors import ConfigError
from emorec.model.chatglm_tokenizer import chatglm_tokenizer

FAMILIES = [2, 3]


def model_dir(version: int) -> str:
    return str(REF / f"chatglm{version}-tiny")


@cache
def reference(version: int) -> dict:
    return json.loads((REF / "references" / f"chatglm{version}-tiny" / "tokens.json").read_text())


@cache
def built(version: int, encode_special_tokens: bool = False):
    return chatglm_tokenizer(model_dir(version), version, encode_special_tokens=encode_special_tokens)


def mismatches(tok, strings) -> list:
    """Every stored field of every reference string that `tok` does not reproduce."""
    wrong = []
    for s in strings:
        text, ids = s["text"], s["input_ids"]
        enc = tok(text)
        got = {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "input_ids_no_special": tok.encode(text, add_special_tokens=False),
            "tokens": tok.tokenize(text),
            "decode_no_special": tok.decode(s["input_ids_no_special"]),
            "decode_with_special": tok.decode(ids),
            "decode_skip_special": tok.decode(ids, skip_special_tokens=True),
        }
        wrong += [(text, key, value, s[key]) for key, value in got.items() if value != s[key]]
    return wrong


@pytest.mark.parametrize("version", FAMILIES)
def test_every_reference_string_matches(version):
    strings = reference(version)["strings"]
    assert len(strings) == 32
    assert mismatches(built(version), strings) == []


@pytest.mark.parametrize("version", FAMILIES)
def test_special_tokens_and_sizes(version):
    ref, tok = reference(version), built(version)
    assert {token: tok.convert_tokens_to_ids(token) for token in ref["special_tokens"]} == ref["special_tokens"]
    assert tok.convert_tokens_to_ids("<s>") == ref["bos_id"]
    assert (tok.eos_token, tok.eos_token_id) == (ref["eos_token"], ref["eos_token_id"])
    assert (tok.pad_token, tok.pad_token_id) == (ref["pad_token"], ref["pad_token_id"])
    assert tok.unk_token == ref["unk_token"]
    assert tok.padding_side == ref["padding_side"] == "left"
    assert tok.chat_template is None
    # THUDM's len() counts its ids that decode to "" as one token (998 / 1007); a fast tokenizer
    # counts every id, which is THUDM's vocab_size.
    assert len(tok) == ref["vocab_size"] == ref["sp_vocab_size"] + len(ref["special_tokens"])


@pytest.mark.parametrize("version", FAMILIES)
def test_batch_pads_left_with_unk(version):
    ref = reference(version)["batch_padding"]
    batch = built(version)(ref["texts"], padding=True)
    assert batch["input_ids"] == ref["input_ids"]
    assert batch["attention_mask"] == ref["attention_mask"]


def test_chatglm2_prompts():
    chat = reference(2)["chat"]
    for case in chat.values():
        assert built(2)(case["prompt"])["input_ids"] == case["input_ids"]


def test_chatglm3_chat_inputs():
    """THUDM's build_chat_input: per message, role token + encode(metadata + "\\n") + encode(text)."""
    tok, chat = built(3), reference(3)["chat"]

    def message(role, metadata, text):
        head = tok.encode(metadata + "\n", add_special_tokens=False)
        return [tok.convert_tokens_to_ids(f"<|{role}|>")] + head + tok.encode(text, add_special_tokens=False)

    single = chat["build_single_message_user"]
    assert message(single["role"], single["metadata"], single["message"]) == single["ids"]
    for key in ("build_chat_input", "build_chat_input_history", "build_chat_input_observation"):
        case = chat[key]
        ids = [i for m in case["history"] for i in message(m["role"], "", m["content"])]
        ids += message(case["role"], "", case["query"]) + [tok.convert_tokens_to_ids("<|assistant|>")]
        assert tok("")["input_ids"] + ids == case["input_ids"], key


def test_chatglm3_encode_special_tokens():
    tok = built(3, encode_special_tokens=True)
    for case in reference(3)["encode_special_tokens_true"]:
        assert tok(case["text"])["input_ids"] == case["input_ids"]
        assert tok.tokenize(case["text"]) == case["tokens"]
    with pytest.raises(ConfigError, match="ChatGLM3"):
        chatglm_tokenizer(model_dir(2), 2, encode_special_tokens=True)


@pytest.mark.parametrize("version, encode_special", [(2, False), (3, False), (3, True)])
def test_save_and_reload_with_auto_tokenizer(version, encode_special, tmp_path):
    built(version, encode_special).save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert tok.is_fast and not (tmp_path / "tokenizer.model").exists()
    ref = reference(version)
    if encode_special:
        for case in ref["encode_special_tokens_true"]:
            assert tok(case["text"])["input_ids"] == case["input_ids"]
    else:
        assert mismatches(tok, ref["strings"]) == []
    assert len(tok) == ref["vocab_size"]
    assert (tok.padding_side, tok.pad_token_id, tok.eos_token_id) == ("left", 0, 2)
    assert tok(ref["batch_padding"]["texts"], padding=True)["input_ids"] == ref["batch_padding"]["input_ids"]


BAD_FILES = {
    "empty": lambda real: b"",
    "json": lambda real: json.dumps({"model": {"type": "BPE"}}).encode(),
    "random bytes": lambda real: bytes(range(256)) * 8,
    "truncated": lambda real: real[: len(real) // 2],
}


@pytest.mark.parametrize("kind", BAD_FILES)
def test_bad_tokenizer_model_is_a_config_error(kind, tmp_path):
    path = tmp_path / "tokenizer.model"
    path.write_bytes(BAD_FILES[kind]((Path(model_dir(3)) / "tokenizer.model").read_bytes()))
    with pytest.raises(ConfigError, match="not a SentencePiece") as err:
        chatglm_tokenizer(str(tmp_path), 3)
    assert str(path) in str(err.value)


def test_missing_tokenizer_model_and_bad_family(tmp_path):
    with pytest.raises(ConfigError, match="not found") as err:
        chatglm_tokenizer(str(tmp_path), 2)
    assert str(tmp_path / "tokenizer.model") in str(err.value)
    with pytest.raises(ConfigError, match="family_version"):
        chatglm_tokenizer(model_dir(2), 4)


@pytest.mark.parametrize("version", FAMILIES)
def test_a_special_token_name_that_is_already_a_piece(version, tmp_path):
    """A real vocabulary may hold a piece spelt like a ChatGLM token ("sop"): the piece keeps its id, the special id
    gets an alias, and the prefix, decoding and chat prompts still use THUDM's ids."""
    from transformers.convert_slow_tokenizer import import_protobuf

    from emorec.text.prompts import chat_ids

    proto = import_protobuf().ModelProto()
    proto.ParseFromString((Path(model_dir(version)) / "tokenizer.model").read_bytes())
    victim = next(i for i, p in enumerate(proto.pieces) if i > 300 and p.type == 1 and "▁" not in p.piece)
    proto.pieces[victim].piece = "sop"
    (tmp_path / "tokenizer.model").write_bytes(proto.SerializeToString())
    tok = chatglm_tokenizer(str(tmp_path), version)
    assert tok.convert_tokens_to_ids("sop") == victim
    alias = tok.init_kwargs["chatglm_special_tokens"]["sop"]
    assert tok.convert_tokens_to_ids(alias) == 1003
    assert tok("hi")["input_ids"][:2] == [1001, 1003]
    assert tok.decode([1001, 1003]) == ("" if version == 2 else "[gMASK]sop")
    query = reference(version)["chat"]["build_prompt" if version == 2 else "build_chat_input"]["query"]
    assert chat_ids(tok, query)[:2] == [1001, 1003]
    tok.save_pretrained(tmp_path / "saved")
    again = AutoTokenizer.from_pretrained(tmp_path / "saved")
    assert again("hi")["input_ids"] == tok("hi")["input_ids"] and chat_ids(again, query) == chat_ids(tok, query)
