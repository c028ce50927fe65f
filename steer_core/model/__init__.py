"""The language model: loading it (the embedded default or any local/HF causal LM) and the hooks that
read and replace what its layers compute, per call."""
