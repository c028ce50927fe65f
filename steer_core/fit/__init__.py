"""Fitting: SAE training, learned offsets (BiPO, RePS, KL), the model's instructed replies used as fitting
data, the feedback adapter, and `prepare`. Inference never imports this package."""
