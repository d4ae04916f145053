"""Instruction prompts: task, label set, a window of previous turns, and the target utterance, in the model family's
own chat format.

The answer is the label's verbaliser followed by EOS; the loss falls on the answer only. When the
prompt is over budget the oldest turns go first; the target utterance is never cut.

Chat formats, as each family's official fine-tuning scripts build them:
- chatglm2: `[gMASK]sop` + `[Round 1]\n\n问：{prompt}\n\n答：`
- chatglm3: `[gMASK]sop<|user|>\n {prompt}<|assistant|>`
- template: the tokenizer's own chat template (GLM-4 `-hf`: `[gMASK]<sop><|user|>\n{prompt}<|assistant|>`)
- plain: the prompt alone (tiny-glm)
A tokenizer carries its format as `chat_format` in its init kwargs (tokenizer_config.json), so a converted ChatGLM
checkpoint keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import PromptConfig
from .data.schema import DatasetSpec, Example, Turn

INSTRUCTION = "Now you are an expert of sentiment and emotional analysis."
HISTORY_HEADER = "The dialogue so far:"


@dataclass(frozen=True)
class Encoded:
    prompt_ids: list[int]
    context_turns: int


def _speaker(s: str | None) -> str:
    return s if s else "Speaker"


def render(example: Example, spec: DatasetSpec, context: tuple[Turn, ...]) -> str:
    options = ", ".join(spec.verbalisers[label] for label in spec.labels)
    parts = [INSTRUCTION]
    if context:
        parts.append(HISTORY_HEADER)
        parts.extend(f"{_speaker(t.speaker)}: {t.text}" for t in context)
    target = f'{_speaker(example.speaker)}: "{example.text}"' if spec.dialogue else f'"{example.text}"'
    which = "all emotional labels that apply to" if spec.multi_label else "the emotional label of"
    parts.append(f"Please select {which} {target} from <{options}>:")
    return "\n".join(parts) + " "


CHAT_FORMATS = ("chatglm2", "chatglm3", "template", "plain")


def chat_format(tokenizer) -> str:
    fmt = getattr(tokenizer, "init_kwargs", {}).get("chat_format")
    if fmt is None:
        return "template" if getattr(tokenizer, "chat_template", None) else "plain"
    if fmt not in CHAT_FORMATS:
        raise ValueError(f"tokenizer chat_format {fmt!r} is not one of {CHAT_FORMATS}")
    return fmt


def chat_ids(tokenizer, text: str) -> list[int]:
    """The prompt's token ids in the tokenizer's chat format, ending where the answer begins."""
    fmt = chat_format(tokenizer)

    def enc(s: str) -> list[int]:
        return tokenizer(s, add_special_tokens=False)["input_ids"]

    def special(*tokens: str) -> list[int]:
        return tokenizer.convert_tokens_to_ids(list(tokens))

    if fmt == "chatglm2":
        return special("[gMASK]", "sop") + enc(f"[Round 1]\n\n问：{text}\n\n答：")
    if fmt == "chatglm3":
        return special("[gMASK]", "sop", "<|user|>") + enc("\n") + enc(text) + special("<|assistant|>")
    if fmt == "template":
        out = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                            tokenize=True)
        return list(out["input_ids"] if hasattr(out, "keys") else out)
    return enc(text)


def encode_prompt(example: Example, spec: DatasetSpec, tokenizer, cfg: PromptConfig, budget: int) -> Encoded:
    """Tokenise with as many recent turns as fit in `budget` tokens (at least the target itself)."""
    window = min(cfg.history, len(example.context)) if spec.dialogue else 0
    while True:
        context = example.context[len(example.context) - window:] if window else ()
        ids = chat_ids(tokenizer, render(example, spec, context))
        if len(ids) <= budget or window == 0:
            return Encoded(ids, window)
        window -= 1


def answer_ids(tokenizer, spec: DatasetSpec) -> dict[str, list[int]]:
    """Each label's full answer token sequence: verbaliser then EOS."""
    out = {}
    for label in spec.labels:
        ids = tokenizer(spec.verbalisers[label], add_special_tokens=False)["input_ids"]
        out[label] = ids + [tokenizer.eos_token_id]
    return out


def template_corpus() -> list[str]:
    """Prompt text for training the tiny test tokenizer, so template words are whole tokens."""
    words = [INSTRUCTION, HISTORY_HEADER, "Please select the emotional label of", "all emotional labels that apply to",
             "from", "Speaker", "neutral", "happy", "sad", "angry", "excited", "frustrated"]
    return words
