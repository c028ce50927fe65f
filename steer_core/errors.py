"""Errors a user can fix, importable without torch so the CLI can report them cheaply.

A UserError's message says what was wrong with the input or setting and what to do; the app shows
it as "please check the input" and the CLI prints it and exits with status 2. Anything else is a
bug: the app logs it and says an internal error happened, the CLI shows the traceback.
UserError is a ValueError, so callers that catch ValueError keep working.
"""


class UserError(ValueError):
    """Bad input or a setting the user can change."""


class ModelLoadError(UserError):
    """The model could not be loaded; the message says why and what to do."""
