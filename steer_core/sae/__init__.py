"""Sparse autoencoders on attention queries: the batched per-head module, its files (SAELens layout), a
layer's SAEs with the level prototypes, and the store that loads them (it never trains: fit/ does)."""
