"""The one wrapper of every handler: input the user can fix (a UserError) is reported as such, anything else is
logged with its traceback and reported as an internal error, and the app keeps serving either way."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging

import gradio as gr

from steer_core.errors import UserError

from .runtime import gpu, gpu_long

log = logging.getLogger("bloom-steer")
USER_ERRORS = (UserError,)  # bad input the user can fix; anything else is logged as an internal error
CHECK_INPUT = "Please check the input"


def user_error(exc: Exception) -> gr.Error:
    return gr.Error(str(exc), title=CHECK_INPUT)


def internal_error(name: str, exc: Exception) -> gr.Error:
    log.exception("%s failed", name)
    return gr.Error(f"Internal error ({type(exc).__name__}); the app is still running, please try again.")


@contextlib.contextmanager
def reported(name: str):
    """Errors inside reported as above: a user's as such, anything else logged as an internal error."""
    try:
        yield
    except USER_ERRORS as exc:
        raise user_error(exc) from None
    except gr.Error:
        raise
    except Exception as exc:
        raise internal_error(name, exc) from None


def guarded(name: str):
    """A handler (a function, or a generator that streams) whose errors are reported as above."""

    def wrap(fn):
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def streaming(*args, **kwargs):
                with reported(name):
                    yield from fn(*args, **kwargs)

            return streaming

        @functools.wraps(fn)
        def handler(*args, **kwargs):
            with reported(name):
                return fn(*args, **kwargs)

        return handler

    return wrap


def endpoint(name: str, signature=None, long: bool = False):
    """A layout's event function as an endpoint: ZeroGPU-wrapped, named, and (signature) the API's parameters.
    The handler it calls is already guarded."""

    def wrap(fn):
        if signature is not None:
            fn.__signature__ = signature
        fn.__name__ = name
        return (gpu_long if long else gpu)(fn)

    return wrap
