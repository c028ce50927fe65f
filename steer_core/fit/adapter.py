"""The feedback adapter: a small LoRA that teaches the model the task (second-person feedback on
this student's answer) from the train split's feedbacks of all levels alike. Under the plain prompt
the level is never shown, so unsteered output is feedback of some level and steering has levels to
choose from; with `prompts=("plain", "instruction")` (the shipped adapter, see its training.json)
the same feedbacks are also shown under the prompt that names their level, so the model can write
each level when told and steering has level-specific behaviour to select.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..bloom import by_writers, load_dataset
from ..errors import UserError
from ..io_utils import atomic_write_text
from ..prompts import DEFAULT_STYLE, instruction_messages, messages, pad_replies, render
from .shared_prompt import shared_prompt


def prompt_groups(examples: list[tuple[list[int], int]]) -> list[tuple[list[int], list[list[int]]]]:
    """Group rendered (ids, start) examples by their prompt: the six feedbacks of a scenario share one
    prompt, which then runs once per step instead of six times (training is about 3x faster)."""
    groups: dict[tuple[int, ...], list[list[int]]] = {}
    for ids, start in examples:
        groups.setdefault(tuple(ids[:start]), []).append(list(ids[start:]))
    return [(list(prompt), replies) for prompt, replies in groups.items()]


def shared_prompt_loss(
    model, prompt: list[int], replies: list[list[int]], pad_id: int, device
) -> tuple[torch.Tensor, int]:
    """Summed next-token loss of each reply after the same prompt, and the number of reply tokens.
    The prompt runs once; its key/value cache is repeated for the replies (gradients flow through it),
    so this equals the loss of the concatenated sequences run separately."""
    n = len(replies)
    out, cache = shared_prompt(model, prompt, n, device)
    ids, real = (t.to(device) for t in pad_replies(replies, pad_id))
    attention = torch.cat([torch.ones((n, len(prompt)), dtype=torch.long, device=device), real.long()], dim=1)
    logits = model(input_ids=ids, attention_mask=attention, past_key_values=cache, use_cache=True).logits
    # reply token t is predicted by the logits at reply position t-1; token 0 by the prompt's last position
    first = out.logits[:, -1:].expand(n, 1, -1)
    predicted = torch.cat([first, logits[:, :-1]], dim=1)
    loss = torch.nn.functional.cross_entropy(predicted[real].float(), ids[real], reduction="sum")
    return loss, int(real.sum())


def training_examples(
    tok, rows, prompts: tuple[str, ...], style: str = DEFAULT_STYLE, instruction_writers: tuple[str, ...] | None = None
) -> list[tuple[list[int], int]]:
    """Rendered (ids, reply start) examples: every row under the plain prompt, and/or under the prompt
    that names its level (from instruction_writers' rows only, when given)."""
    unknown = set(prompts) - {"plain", "instruction"}
    if unknown or not prompts:
        raise UserError(f"prompts must be plain and/or instruction, got {prompts!r}")
    examples = []
    if "plain" in prompts:
        examples += [render(tok, messages(r.question, r.student_answer, style), r.feedback) for r in rows]
    if "instruction" in prompts:
        examples += [
            render(tok, instruction_messages(r.question, r.student_answer, r.level, style), r.feedback)
            for r in by_writers(rows, instruction_writers, "train-split rows")
        ]
    return examples


EPOCHS = 4  # the shipped adapter's (assets/adapter/training.json)


def train_adapter(
    lm,
    out_dir: str | Path,
    epochs: int = EPOCHS,
    rank: int = 8,
    lr: float = 1e-3,
    batch_size: int = 12,
    seed: int = 0,
    style: str = DEFAULT_STYLE,
    prompts: tuple[str, ...] = ("plain",),
    instruction_writers: tuple[str, ...] | None = None,
) -> dict:
    """Fit a LoRA on the train split's feedbacks and save it (peft format, safetensors).
    prompts: "plain" shows each feedback under the base prompt (the level never named);
    "instruction" also under the prompt that names and describes its level, so the adapter learns to
    write each level when told (and steering has level-specific behaviour to select).
    instruction_writers: the instruction examples come from these writers only, so a validation on
    the other writers never scores feedbacks whose level the adapter was shown."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    examples = training_examples(lm.tokenizer, load_dataset(split="train"), prompts, style, instruction_writers)
    model = _with_lora(lm, rank)
    t0 = time.time()
    losses = _fit_lora(model, lm, prompt_groups(examples), len(examples), epochs, lr, batch_size, rng)
    model.eval()
    out_dir = Path(out_dir)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    info = {
        "epochs": epochs,
        "rank": rank,
        "lr": lr,
        "batch_size": batch_size,
        "seed": seed,
        "style": style,
        "prompts": list(prompts),
        "instruction_writers": sorted(instruction_writers) if instruction_writers else None,
        "n_examples": len(examples),
        "final_loss": round(_recent_loss(losses), 4),
        "first_loss": round(losses[0], 4),
        "seconds": round(time.time() - t0, 1),
    }
    atomic_write_text(out_dir / "training.json", json.dumps(info, indent=1))
    model.unload()  # leave lm.model as it was (no LoRA layers)
    return info


def _with_lora(lm, rank: int):
    """lm.model wrapped with fresh LoRA layers of `rank` on the family's adapter targets (every linear layer), in
    training mode; `unload()` takes them off again."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.05,
        target_modules=list(lm.family.adapter_targets),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(lm.model, cfg)
    model.train()
    return model


def _recent_loss(losses: list[float]) -> float:
    """The mean loss of the last ten steps: one step's loss is noisy."""
    return sum(losses[-10:]) / len(losses[-10:])


def _fit_lora(model, lm, groups, n_examples: int, epochs: int, lr: float, batch_size: int, rng) -> list[float]:
    """AdamW with a one-cycle schedule over `epochs` shuffled passes of the prompt groups; each step takes as many
    groups as make about `batch_size` replies (a group runs its prompt once, shared_prompt_loss) and the loss is
    per reply token. Returns each step's loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    per_step = max(1, round(batch_size * len(groups) / n_examples))  # prompts per step, ~batch_size replies
    steps = epochs * ((len(groups) + per_step - 1) // per_step)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    losses = []
    bar = tqdm(total=steps, desc="LoRA feedback adapter")
    for _ in range(epochs):
        order = list(range(len(groups)))
        rng.shuffle(order)
        for i in range(0, len(order), per_step):
            parts = [
                shared_prompt_loss(model, *groups[j], lm.tokenizer.pad_token_id, lm.device)
                for j in order[i : i + per_step]
            ]
            loss = sum(p[0] for p in parts) / sum(p[1] for p in parts)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{_recent_loss(losses):.3f}")
    bar.close()
    return losses
