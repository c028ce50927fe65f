"""The Bloom-level judge: the classifier that reads a feedback's level, and its fitting."""
