"""steer_core: steer the Bloom level of LLM feedback by gradient descent on sparse query features.

Importable without gradio; the web UI (app.py) is a thin layer over it.
"""

import warnings

from .bloom import DESCRIPTIONS, LEVELS

# transformers 5.2x renamed `past_key_values` to `cache` but 5.0 only knows the old name; the package
# keeps the name every supported version accepts and silences the rename notice.
warnings.filterwarnings("ignore", message=".*past_key_values.* is deprecated", category=FutureWarning)

__all__ = ["LEVELS", "DESCRIPTIONS"]
__version__ = "0.1.0"
