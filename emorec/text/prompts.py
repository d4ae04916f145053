"""Instruction prompts: task, label set, a window of previous turns, and the target utterance, in the model family's
own chat format.

The answer is the label's verbaliser followed by EOS; the loss falls on the answer only. When the
prompt is over budget the oldest turns go first; only when no turn is left and the target utterance alone is still
too long is the target cut, keeping its end (the words closest to the answer).

Chat formats, as each family's official fine-tuning scripts build them:
- chatglm2: `[gMASK]sop` + `[Round 1]\n\n问：{prompt}\n\n答：`
- chatglm3: `[gMASK]sop<|user|>\n {prompt}<|assistant|>`
- template: the tokenizer's own chat template (GLM-4 `-hf`: `[gMASK]<sop><|user|>\n{prompt}<|assistant|>`)
- plain: the prompt alone (tiny-glm)
A tokenizer carries its format as `chat_format` in its init kwargs (tokenizer_config.json), so a converted ChatGLM
checkpoint keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from emorec.config import PromptConfig
from emorec.data.schema import DatasetSpec, Example, Turn

INSTRUCTION = "Now you are an expert of sentiment and emotional analysis."
HISTORY_HEADER = "The dialogue so far:"


@dataclass(frozen=True)
class Encoded:
    prompt_ids: list[int]
    context_turns: int
    target_cut: int = 0  # tokens dropped from the start of the target utterance to fit the budget
    over_budget: bool = False  # even the prompt without context and with the target cut to nothing is too long
    fixed_tokens: int = 0  # with over_budget: about how many tokens the prompt takes besides the target


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
        # A ChatGLM tokenizer may keep a special under an alias (its name is also a piece); see chatglm_tokenizer.
        names = getattr(tokenizer, "init_kwargs", {}).get("chatglm_special_tokens") or {}
        return tokenizer.convert_tokens_to_ids([names.get(t, t) for t in tokens])

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
    """Tokenise with as many recent turns as fit in `budget` tokens; if even the target alone is over budget, cut the
    target's start.

    The ids are always the chat format's tokenisation of the whole rendered prompt (a tokenizer need not be additive
    over concatenation). The window is the largest w <= history whose prompt fits, found in O(turns) tokenizer work:
    each turn is tokenised once (in one call) to estimate the window, then whole prompts verify it, usually two: each
    one rescales the estimate by what it measured, and after three misses the rest is bisected. This assumes that a
    prompt with one more turn is never shorter, which holds in practice for the newline-separated turns of `render`
    with BPE and SentencePiece tokenizers (tests/test_bad_runs.py checks it against one tokenisation per turn).
    """
    turns = example.context if spec.dialogue else ()
    top = min(cfg.history, len(turns))
    prompts: dict[int, list[int]] = {}

    def fits(w: int) -> bool:
        if w not in prompts:
            prompts[w] = chat_ids(tokenizer, render(example, spec, turns[len(turns) - w:] if w else ()))
        return len(prompts[w]) <= budget

    if fits(top):
        return Encoded(prompts[top], top)
    if top:
        window = _largest_window(turns[len(turns) - top:], tokenizer, budget, fits, prompts)
        if window >= 0:
            return Encoded(prompts[window], window)
    fits(0)
    return _cut_target(example, spec, tokenizer, budget, prompts[0])


def _largest_window(window_turns: tuple[Turn, ...], tokenizer, budget: int, fits, prompts: dict) -> int:
    """The largest w < len(window_turns) for which fits(w) (which fills prompts[w]), or -1 if none; the whole window
    is known not to fit (prompts[len(window_turns)] holds its ids)."""
    top = len(window_turns)
    longest = len(prompts[top])
    lines = ["\n" + HISTORY_HEADER] + [f"\n{_speaker(t.speaker)}: {t.text}" for t in window_turns]
    counts = [len(ids) for ids in tokenizer(lines, add_special_tokens=False)["input_ids"]]
    # dropped[w]: tokens the turns before the last w take (and the header, when none is left), by the counts above.
    dropped = [0] * (top + 1)
    for w in range(top - 1, -1, -1):
        dropped[w] = dropped[w + 1] + counts[1 + top - 1 - w] + (counts[0] if w == 0 else 0)
    lo, hi = -1, top  # lo: the largest window known to fit; hi: the smallest known not to
    scale, probes = 1.0, 0
    while hi - lo > 1:
        if probes < 3:  # the estimate, scaled by what the whole prompts measured so far
            probe = next((w for w in range(hi - 1, lo, -1) if longest - scale * dropped[w] <= budget), lo + 1)
        else:  # the estimate keeps missing: bisect
            probe = (lo + hi) // 2
        if fits(probe):
            lo = probe
        else:
            hi = probe
        probes += 1
        measured = longest - len(prompts[probe])
        if dropped[probe] > 0 and measured > 0:
            scale = measured / dropped[probe]
    return lo


def _cut_target(example: Example, spec: DatasetSpec, tokenizer, budget: int, whole: list[int]) -> Encoded:
    """The prompt without context and with the target utterance's first tokens dropped until it fits."""
    text = example.text
    fast = bool(getattr(tokenizer, "is_fast", False))
    enc = tokenizer(text, add_special_tokens=False, **({"return_offsets_mapping": True} if fast else {}))
    n = len(enc["input_ids"])
    fixed = len(whole) - n
    keep = budget - fixed
    for _ in range(32):  # each try drops at least one more token; the first estimate is nearly always right
        if keep <= 0 or n == 0:
            break
        start = enc["offset_mapping"][n - keep][0] if fast else len(text) - (len(text) * keep) // n
        ids = chat_ids(tokenizer, render(replace(example, text=text[start:].lstrip()), spec, ()))
        if len(ids) <= budget:
            return Encoded(ids, 0, target_cut=n - keep)
        keep -= max(1, len(ids) - budget)
    return Encoded(whole, 0, over_budget=True, fixed_tokens=max(fixed, 0))


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
