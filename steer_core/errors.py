"""Errors a user can fix, importable without torch so the CLI can report them cheaply."""


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says why and what to do."""
