import os

import pytest
from hypothesis import settings

from .util import CONLL_SAMPLE, DATA_DIR

settings.register_profile("default", deadline=None, max_examples=60)
settings.load_profile("default")


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False, help="run slow tests")


def pytest_collection_modifyitems(config, items):
    run_slow = config.getoption("--slow") or os.environ.get("CI", "").lower() in ("1", "true")
    skip_slow = pytest.mark.skip(reason="slow: run with --slow (or CI=true)")
    skip_data = pytest.mark.skip(reason=f"needs the benchmark data at {DATA_DIR}")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
        if "data" in item.keywords and not DATA_DIR.is_dir():
            item.add_marker(skip_data)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A tiny random BERT (config, vocab, weights) written as a plain HF folder."""
    from .util import write_tiny_bert

    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture()
def conll_sample(tmp_path):
    """util.CONLL_SAMPLE (hand-written, CoNLL-2003 layout with POS and chunks) as a file."""
    path = tmp_path / "sample.txt"
    path.write_text(CONLL_SAMPLE, encoding="utf8")
    return path
