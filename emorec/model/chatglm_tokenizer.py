"""A fast (``tokenizers``) ChatGLM2/ChatGLM3 tokenizer built from ``tokenizer.model``.

It reproduces THUDM's ``ChatGLMTokenizer`` ids without ``sentencepiece`` or remote code, and it
is a plain ``PreTrainedTokenizerFast``: ``save_pretrained`` writes a ``tokenizer.json`` that
``AutoTokenizer.from_pretrained`` reloads with the same behaviour.
"""

from __future__ import annotations

import os
import re

from google.protobuf.message import DecodeError
from tokenizers import AddedToken, Regex, decoders, processors
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf

from emorec.errors import ConfigError

_BPE = 2  # TrainerSpec.ModelType
GLM_TOKENS = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop"]
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]


def read_sentencepiece(path: str):
    """The parsed SentencePiece model proto of `path`, or a ConfigError naming the file."""
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: tokenizer.model not found")
    proto = import_protobuf().ModelProto()
    try:
        with open(path, "rb") as f:
            proto.ParseFromString(f.read())
    except DecodeError as e:
        raise ConfigError(f"{path}: not a SentencePiece model ({e})") from None
    if not proto.pieces or proto.trainer_spec.model_type != _BPE:
        raise ConfigError(f"{path}: not a SentencePiece BPE model")
    return proto


def chatglm_tokenizer(
    model_dir: str, family_version: int, encode_special_tokens: bool = False
) -> PreTrainedTokenizerFast:
    """Build the tokenizer of a ChatGLM2 (``family_version=2``) or ChatGLM3 (``3``) checkpoint.

    ``encode_special_tokens`` (ChatGLM3 only) matches THUDM's option of that name: the role
    tokens written in the text become their ids. By default all text is encoded literally.
    """
    if family_version not in (2, 3):
        raise ConfigError(f"family_version must be 2 or 3, not {family_version!r}")
    if encode_special_tokens and family_version != 3:
        raise ConfigError("encode_special_tokens exists only for ChatGLM3")
    path = os.path.join(model_dir, "tokenizer.model")
    proto = read_sentencepiece(path)
    spec = proto.trainer_spec

    vocab = {piece.piece: i for i, piece in enumerate(proto.pieces)}
    extra = GLM_TOKENS + (ROLE_TOKENS if family_version == 3 else [])
    # THUDM appends its tokens after the pieces; they live in the BPE vocabulary but have no merges, so text never
    # encodes to them. A name that is already a piece (a real vocabulary may hold "sop") gets an alias for the
    # special id, and `chatglm_special_tokens` (saved with the tokenizer) maps each name to its vocabulary entry.
    names = {token: f"<|chatglm_{token}|>" if token in vocab else token for token in extra}
    vocab.update({names[token]: len(proto.pieces) + i for i, token in enumerate(extra)})
    backend = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab)

    def piece(piece_id: int) -> str:
        return proto.pieces[piece_id].piece

    unk, bos, eos = piece(spec.unk_id), piece(spec.bos_id), piece(spec.eos_id)
    # THUDM decodes unk/bos/eos (and ChatGLM2 also its own tokens) to nothing, even when
    # special tokens are kept; ChatGLM3 writes its tokens out, even when they are skipped.
    silent = [unk, bos, eos] + ([names[t] for t in GLM_TOKENS] if family_version == 2 else [])
    pattern = r"\A(?:" + "|".join(map(re.escape, silent)) + r")\z"
    aliases = [decoders.Replace(Regex(r"\A" + re.escape(alias) + r"\z"), token)
               for token, alias in names.items() if alias != token]
    backend.decoder = decoders.Sequence([decoders.Replace(Regex(pattern), ""), *aliases, backend.decoder])

    prefix = [names["[gMASK]"], names["sop"]]
    backend.post_processor = processors.TemplateProcessing(
        single=prefix + ["$A"],
        pair=prefix + ["$A", "$B", eos],
        special_tokens=[(token, vocab[token]) for token in prefix + [eos]],
    )
    if encode_special_tokens:
        backend.add_tokens([AddedToken(token, normalized=False) for token in ROLE_TOKENS])

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=unk,
        eos_token=eos,
        pad_token=unk,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        # unk/eos become special added tokens; THUDM never matches them inside the text.
        split_special_tokens=True,
        model_input_names=["input_ids", "attention_mask"],
        chat_format=f"chatglm{family_version}",  # saved in tokenizer_config.json; see prompts.chat_format
        chatglm_special_tokens=names,
    )
