"""Errors a user can fix, in a module with no dependencies, so that every module can raise them and
the app and the CLI can catch them without import cycles (the CLI itself imports torch-backed
modules at start-up).

A UserError's message says what was wrong with the input or setting and what to do; the app shows
it as "please check the input" and the CLI prints it and exits with status 2. Anything else is a
bug: the app logs it and says an internal error happened, the CLI shows the traceback.
UserError is a ValueError, so callers that catch ValueError keep working.
"""


class UserError(ValueError):
    """Bad input or a setting the user can change."""


class ModelLoadError(UserError):
    """The model could not be loaded; the message says why and what to do."""
