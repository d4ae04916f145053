"""Published results the report sets beside emorec's own: the best known score per dataset and the same
backbone family's (ChatGLM2-6B) score, each cited by its paper's title and year."""

from __future__ import annotations

from typing import Any

# Every published number names its method; PAPERS gives each method's paper by title and year.
PAPERS: dict[str, tuple[str, int]] = {
    "LaERC-S": ("LaERC-S: Improving LLM-based Emotion Recognition in Conversation with Speaker Characteristics", 2025),
    "PRC-Emo": ("Do LLMs Feel? Teaching Emotion Recognition with Prompts, Retrieval, and Curriculum Learning", 2025),
    "S+PAGE": ("S+PAGE: A Speaker and Position-Aware Graph Neural Network Model for Emotion Recognition in "
               "Conversation", 2021),
    "InstructERC": ("InstructERC: Reforming Emotion Recognition in Conversation with Multi-task Retrieval-Augmented "
                    "Large Language Models", 2023),
}

# dataset -> (metric the number is in, best known test-set score in percent (text only), method)
PUBLISHED_BEST: dict[str, tuple[str, float, str]] = {
    "iemocap": ("weighted_f1", 72.40, "LaERC-S"),
    "meld": ("weighted_f1", 70.44, "PRC-Emo"),
    "emorynlp": ("weighted_f1", 42.08, "LaERC-S"),
    "dailydialog": ("micro_f1_no_neutral", 64.07, "S+PAGE"),
}
# The same backbone family: InstructERC's ChatGLM2-6B LoRA (and its zero-shot baseline), weighted-F1.
PUBLISHED_CHATGLM2: dict[str, tuple[str, float, float, str]] = {
    "iemocap": ("weighted_f1", 67.54, 21.1, "InstructERC"),
    "meld": ("weighted_f1", 65.58, 21.8, "InstructERC"),
    "emorynlp": ("weighted_f1", 39.09, 24.4, "InstructERC"),
}


def citation(method: str) -> str:
    """`Method: "Title" (year)`, for a method named in the published numbers."""
    title, year = PAPERS[method]
    return f'{method}: "{title}" ({year})'


def sources_note() -> str:
    """The paragraph under a results table that says where its published numbers come from."""
    best = "; ".join(f"{d} {m} ({metric})" for d, (metric, _, m) in PUBLISHED_BEST.items())
    cited = sorted({m for _, _, m in PUBLISHED_BEST.values()} | {m for *_, m in PUBLISHED_CHATGLM2.values()})
    return ("Published numbers are test-set scores, text only. Best known: " + best + ". Same backbone family: "
            "InstructERC with ChatGLM2-6B and LoRA (weighted-F1). CARER and GoEmotions have no such number. "
            "Papers: " + "; ".join(citation(m) for m in cited) + ".")


def published(dataset: str, metric: str) -> dict[str, Any]:
    """The published numbers for (dataset, metric), or Nones where the literature reports another metric."""
    out: dict[str, Any] = {"published_best": None, "published_source": None, "chatglm2_lora_instructerc": None}
    best = PUBLISHED_BEST.get(dataset)
    if best and best[0] == metric:
        out.update(published_best=best[1], published_source=best[2])
    ref = PUBLISHED_CHATGLM2.get(dataset)
    if ref and ref[0] == metric:
        out["chatglm2_lora_instructerc"] = ref[1]
    return out
