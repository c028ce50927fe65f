"""A tiny random Llama built in code, wrapped like a loaded model, for fast engine tests."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from steer_core.model.loading import LoadedModel
from steer_core.sae.layer_files import LayerSAEs
from steer_core.sae.module import HeadSAEs


def tiny_lm(seed: int = 0, tokenizer=None) -> LoadedModel:
    """Vocabulary 97, or the tokenizer's size when one is given (see char_tokenizer)."""
    torch.manual_seed(seed)
    vocab = 97 if tokenizer is None else len(tokenizer)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    )
    model = LlamaForCausalLM(cfg).eval().requires_grad_(False)
    return LoadedModel(model, tokenizer, "tiny-llama", torch.device("cpu"), 3, 4, 12)


CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def char_tokenizer(chat: bool = True):
    """A character-level chat tokenizer built in code: printable ASCII and newline, plus <pad> and </s>;
    chat=False: no chat template (as a base model's tokenizer)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = ["\n"] + [chr(c) for c in range(32, 127)]
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate(chars)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tk.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        chat_template=CHAT_TEMPLATE if chat else None,
    )


def tiny_bank(lm: LoadedModel, layer: int, seed: int = 1, d_sae: int = 48) -> LayerSAEs:
    g = torch.Generator().manual_seed(seed)
    sae = HeadSAEs(lm.n_heads, lm.head_dim, d_sae, "standard")
    sae.init_from(torch.randn(256, lm.n_heads, lm.head_dim, generator=g), generator=g)
    sae.requires_grad_(False)
    codes = torch.rand(6, lm.n_heads, d_sae, generator=g)
    queries = torch.randn(6, lm.n_heads, lm.head_dim, generator=g)
    return LayerSAEs(layer, sae, codes, queries, queries.mean(0))


FAMILY_CONFIGS = {  # transformers' own config classes, tiny; windows and soft-caps small enough to matter
    "llama": ("LlamaConfig", {}),
    "mistral": ("MistralConfig", {"sliding_window": 8}),
    "qwen2": ("Qwen2Config", {}),
    "qwen3": ("Qwen3Config", {}),
    "gemma2": ("Gemma2Config", {"query_pre_attn_scalar": 12, "sliding_window": 8, "attn_logit_softcapping": 0.5}),
    "gemma3": ("Gemma3TextConfig", {"query_pre_attn_scalar": 12, "sliding_window": 8}),
    "olmo2": ("Olmo2Config", {}),
    "phi3": ("Phi3Config", {"pad_token_id": 0}),  # head_dim = hidden / heads; the query is a slice of qkv_proj
}


def tiny_family_model(family: str, seed: int = 0, vocab: int = 97, eager: bool = False):
    """A tiny random causal LM of one family, built in code from its transformers config (no downloads)."""
    import transformers
    from transformers import AutoModelForCausalLM

    cls, extra = FAMILY_CONFIGS[family]
    base = dict(
        vocab_size=vocab,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        head_dim=12,
        bos_token_id=None,
        eos_token_id=1,
    )
    if family == "phi3":
        base.pop("head_dim")
    torch.manual_seed(seed)
    cfg = getattr(transformers, cls)(**base, **extra)
    kw = {"attn_implementation": "eager"} if eager else {}
    return AutoModelForCausalLM.from_config(cfg, **kw).eval().requires_grad_(False)


def tiny_family_lm(family: str, seed: int = 0, tokenizer=None, eager: bool = False) -> LoadedModel:
    """tiny_family_model wrapped as a loaded model (the family found as load_model finds it)."""
    tokenizer = tokenizer or char_tokenizer()
    model = tiny_family_model(family, seed, len(tokenizer), eager)
    return LoadedModel(model, tokenizer, f"tiny-{family}", torch.device("cpu"), 3, 4, 12)
