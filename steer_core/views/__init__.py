"""What a user runs: the comparison, the level ladder, the strength sweep, an uploaded set of questions,
and the shipped evidence (the frontier)."""
