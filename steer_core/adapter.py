"""The feedback adapter: a small LoRA that teaches the model the task (second-person feedback on
this student's answer) from the train split's feedbacks of *all* levels alike, never showing the
level. Unsteered output then is feedback of some level, and steering has levels to choose from.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .bloom import load_dataset
from .io_utils import atomic_write_text
from .prompts import instruction_messages, messages, pad_right, render

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _batches(examples, batch_size, pad_id, rng):
    order = list(range(len(examples)))
    rng.shuffle(order)
    for i in range(0, len(order), batch_size):
        ids, mask, reply = pad_right([examples[j] for j in order[i : i + batch_size]], pad_id)
        yield ids, mask.long(), ids.masked_fill(~reply, -100)


def train_adapter(lm, out_dir: str | Path, epochs: int = 2, rank: int = 8, lr: float = 1e-3,
                  batch_size: int = 8, seed: int = 0, style: str = "plain",
                  prompts: tuple[str, ...] = ("plain",)) -> dict:
    """Fit a LoRA on the train split's feedbacks and save it (peft format, safetensors).
    prompts: "plain" shows each feedback under the base prompt (the level never named);
    "instruction" also under the prompt that names and describes its level, so the adapter learns to
    write each level when told (and steering has level-specific behaviour to select)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    rng = random.Random(seed)
    tok = lm.tokenizer
    rows = load_dataset(split="train")
    unknown = set(prompts) - {"plain", "instruction"}
    if unknown or not prompts:
        raise ValueError(f"prompts must be plain and/or instruction, got {prompts!r}")
    examples = []
    if "plain" in prompts:
        examples += [render(tok, messages(r.question, r.student_answer, style), r.feedback) for r in rows]
    if "instruction" in prompts:
        examples += [render(tok, instruction_messages(r.question, r.student_answer, r.level, style), r.feedback)
                     for r in rows]
    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.05, target_modules=TARGET_MODULES,
                     task_type="CAUSAL_LM")
    model = get_peft_model(lm.model, cfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    steps = epochs * ((len(examples) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    losses, t0 = [], time.time()
    bar = tqdm(total=steps, desc="LoRA feedback adapter")
    for _ in range(epochs):
        for ids, mask, labels in _batches(examples, batch_size, tok.pad_token_id, rng):
            out = model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), labels=labels.to(lm.device))
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(out.loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
    bar.close()
    model.eval()
    out_dir = Path(out_dir)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    info = {"epochs": epochs, "rank": rank, "lr": lr, "batch_size": batch_size, "seed": seed, "style": style,
            "prompts": list(prompts),
            "n_examples": len(examples), "final_loss": round(sum(losses[-10:]) / len(losses[-10:]), 4),
            "first_loss": round(losses[0], 4), "seconds": round(time.time() - t0, 1)}
    atomic_write_text(out_dir / "training.json", json.dumps(info, indent=1))
    model.unload()  # leave lm.model as it was (no LoRA layers)
    return info
