"""steer_core: steer the Bloom level of LLM feedback by gradient descent on sparse query features.

Importable without gradio; the web UI (app.py) is a thin layer over it.
"""

from .bloom import DESCRIPTIONS, LEVELS

__all__ = ["LEVELS", "DESCRIPTIONS"]
__version__ = "0.1.0"
