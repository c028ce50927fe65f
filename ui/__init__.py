"""The web UI of the demo, one module per tab, over steer_core (which runs everything). Each tab's handlers are
plain functions that take the widget values and return (or stream) a dict keyed by output names; its layout
code builds the widgets and maps those names to components. `app.py` wires the tabs into one page.

    runtime   the environment (STEER_MODEL, ...), the loaded model `lm()`, the ZeroGPU decorators
    errors    the one wrapper of every handler: bad input as "please check the input", the rest as internal
    widgets   the widget of each Knob kind (a table), and the small pieces every tab shares
    sharing   links, reports and this browser's history of runs
    compare ladder sweep questions train evidence levels   the tabs
"""

from . import runtime  # noqa: F401  (first: ZeroGPU's `spaces` must be imported before CUDA is touched)
