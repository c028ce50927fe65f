"""Prompt formats. One place, because prototypes are only meaningful under exactly the prompt
format used at generation time, and the feedback adapter is trained on it too.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

import torch

from .bloom import DESCRIPTIONS, LEVELS, FeedbackExample, load_dataset
from .caches import ProcessCache
from .errors import UserError

SYSTEM = "You are a teacher. Reply to the student with short feedback on their answer."


def rubric_line(level: str) -> str:
    """The rubric prompt's line for one level (the attention view finds it by this text)."""
    return f"- {level}: {DESCRIPTIONS[level]}"


RUBRIC = SYSTEM + " Feedback can ask for any of six levels of thinking:\n" + "\n".join(rubric_line(lv) for lv in LEVELS)
PROMPT_STYLES = ("plain", "rubric")
DEFAULT_STYLE = "plain"  # the prompt every shipped SAE, offset and figure was made under
FEEDBACK_TOKENS = 48  # the reply tokens fitting and head ranking read: the level shows early, later tokens cost time


def user_turn(question: str, student_answer: str) -> str:
    return f"Question: {question.strip()}\nStudent's answer: {student_answer.strip()}"


def instruction_turn(question: str, student_answer: str, level: str) -> str:
    return (
        user_turn(question, student_answer)
        + f"\n\nWrite feedback at the '{level}' level of Bloom's taxonomy: {DESCRIPTIONS[level]}"
    )


def messages(question: str, student_answer: str, style: str = DEFAULT_STYLE) -> list[dict]:
    """The base prompt: the only format used for training data, prototypes and steering."""
    if style not in PROMPT_STYLES:
        raise UserError(f"prompt style must be one of {PROMPT_STYLES}")
    system = RUBRIC if style == "rubric" else SYSTEM
    return [{"role": "system", "content": system}, {"role": "user", "content": user_turn(question, student_answer)}]


def instruction_messages(question: str, student_answer: str, level: str, style: str = DEFAULT_STYLE) -> list[dict]:
    msgs = messages(question, student_answer, style)
    msgs[-1]["content"] = instruction_turn(question, student_answer, level)
    return msgs


def fewshot_messages(
    question: str, student_answer: str, examples: Sequence[FeedbackExample], style: str = DEFAULT_STYLE
) -> list[dict]:
    """Earlier turns show k feedbacks of the target level on other scenarios; no hooks."""
    msgs = messages(question, student_answer, style)[:1]
    for ex in examples:
        msgs.append({"role": "user", "content": user_turn(ex.question, ex.student_answer)})
        msgs.append({"role": "assistant", "content": ex.feedback})
    msgs.append({"role": "user", "content": user_turn(question, student_answer)})
    return msgs


def pick_fewshot(
    pool: Sequence[FeedbackExample], level: str, k: int, exclude_scenario: str | None = None, seed: int = 0
) -> list[FeedbackExample]:
    """k train-split feedbacks of `level`, from distinct scenarios, deterministic for a seed."""
    cands = [r for r in pool if r.level == level and r.split == "train" and r.scenario_id != exclude_scenario]
    rng = random.Random(f"{level}-{seed}")
    return rng.sample(cands, min(k, len(cands)))


class PromptInput(Protocol):
    """What a method's prompt is built from (generation.Request has these)."""

    question: str
    student_answer: str
    level: str | None
    style: str
    k_shots: int
    scenario_id: str | None


def plain_prompt(req: PromptInput) -> list[dict]:
    """The base prompt (the unsteered reply and every steered method read it)."""
    return messages(req.question, req.student_answer, req.style)


def instruction_prompt(req: PromptInput) -> list[dict]:
    """The level named and described in the prompt."""
    return instruction_messages(req.question, req.student_answer, req.level, req.style)


_POOL = ProcessCache("few-shot examples")


def fewshot_prompt(req: PromptInput) -> list[dict]:
    """k train-split feedbacks of the target level as earlier turns (never the request's own scenario)."""
    pool = _POOL.get("train", lambda: load_dataset(split="train"))
    shots = pick_fewshot(pool, req.level, req.k_shots, exclude_scenario=req.scenario_id)
    return fewshot_messages(req.question, req.student_answer, shots, req.style)


FEEDBACK_CUE = "Feedback:"  # ends the plain prompt of a model without a chat template; the reply follows it


def plain_transcript(msgs: list[dict]) -> str:
    """The prompt of a model without a chat template (a base model): the turns as paragraphs, each earlier
    reply after the cue, and the cue last, so prototypes, offsets and generation all read one format:

        You are a teacher. ...

        Question: ...
        Student's answer: ...

        Feedback:"""
    parts = [f"{FEEDBACK_CUE} {m['content'].strip()}" if m["role"] == "assistant" else m["content"] for m in msgs]
    return "\n\n".join([*parts, FEEDBACK_CUE])


def _chat_text(tokenizer, msgs: list[dict], generation: bool = True) -> str:
    """The chat template's prompt; a template that refuses a system turn (Gemma's) gets it at the top of the
    first user turn, as those models' own docs do."""
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(msgs, add_generation_prompt=generation, tokenize=False)
    except TemplateError:
        if msgs[0]["role"] != "system":
            raise
        first = {"role": "user", "content": msgs[0]["content"] + "\n\n" + msgs[1]["content"]}
        return tokenizer.apply_chat_template([first, *msgs[2:]], add_generation_prompt=generation, tokenize=False)


def shared_prefix(tokenizer, msgs: list[dict], ids: Sequence[int]) -> int:
    """How many leading tokens of `ids` (render(msgs)'s) the turns before the last one fix: every question
    under the same system text and few-shot examples starts with them. At most len(ids) - 1, so that a
    prompt always has a token of its own left to read; 0 where the turns before the last render otherwise."""
    from jinja2 import TemplateError

    if len(msgs) < 2:
        return 0
    try:
        if has_chat_template(tokenizer):
            text = _chat_text(tokenizer, msgs[:-1], generation=False)
        else:
            text = (tokenizer.bos_token or "") + plain_transcript(msgs[:-1])
    except TemplateError:
        return 0
    before = tokenizer(text, add_special_tokens=False)["input_ids"]
    n = 0
    for a, b in zip(before, ids[: len(ids) - 1]):
        if a != b:
            break
        n += 1
    return n


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render(tokenizer, msgs: list[dict], assistant: str | None = None) -> tuple[list[int], int]:
    """Token ids of the chat, ready for generation (assistant=None) or with the assistant's reply.

    Returns (ids, start) where start is the index of the first token of the assistant's content.
    A tokenizer without a chat template gets plain_transcript's format (after its BOS token, if it has one).
    """
    if has_chat_template(tokenizer):
        prompt, lead = _chat_text(tokenizer, msgs), ""
    else:
        prompt, lead = (tokenizer.bos_token or "") + plain_transcript(msgs), " "
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    start = len(ids)
    if assistant is not None:
        eos = tokenizer.eos_token or ""
        ids = ids + tokenizer(lead + assistant.strip() + eos, add_special_tokens=False)["input_ids"]
    return ids, start


def pad_replies(replies: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of replies that follow one shared prompt, right-padded: ids (R, T), real (R, T) bool."""
    width = max(len(r) for r in replies)
    ids = torch.full((len(replies), width), pad_id, dtype=torch.long)
    real = torch.zeros((len(replies), width), dtype=torch.bool)
    for i, reply in enumerate(replies):
        ids[i, : len(reply)] = torch.tensor(list(reply))
        real[i, : len(reply)] = True
    return ids, real


def pad_right(encoded: Sequence[tuple[list[int], int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch `render(..., assistant=...)` outputs with right padding (earlier tokens unaffected).

    Returns ids (B, W), mask (B, W) bool for real tokens, reply (B, W) bool for the assistant's tokens.
    """
    width = max(len(seq) for seq, _ in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.bool)
    reply = torch.zeros_like(mask)
    for r, (seq, start) in enumerate(encoded):
        ids[r, : len(seq)] = torch.tensor(seq)
        mask[r, : len(seq)] = True
        reply[r, start : len(seq)] = True
    return ids, mask, reply
