"""Steering at generation time: the config (strength -> a target's scale in one place), the targets, the
edits of queries and of the residual stream, and the learned offsets' files."""
