"""A tiny random Llama built in code, wrapped like a loaded model, for fast engine tests."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from steer_core.models import LoadedModel
from steer_core.sae import HeadSAEs
from steer_core.steering import LayerBank


def tiny_lm(seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    model = LlamaForCausalLM(cfg).eval().requires_grad_(False)
    return LoadedModel(model, None, "tiny-llama", torch.device("cpu"), 3, 4, 12)


def tiny_bank(lm: LoadedModel, layer: int, seed: int = 1, d_sae: int = 48) -> LayerBank:
    g = torch.Generator().manual_seed(seed)
    sae = HeadSAEs(lm.n_heads, lm.head_dim, d_sae, "standard")
    sae.init_from(torch.randn(256, lm.n_heads, lm.head_dim, generator=g), generator=g)
    sae.requires_grad_(False)
    codes = torch.rand(6, lm.n_heads, d_sae, generator=g)
    queries = torch.randn(6, lm.n_heads, lm.head_dim, generator=g)
    return LayerBank(layer, sae, codes, queries, queries.mean(0))
