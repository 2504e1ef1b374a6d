"""Fixtures shared across test modules."""

import pytest

from aqaa.cli import main


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """`aqaa pipeline -e tiny` run once per session: (root, the argv that ran it). Modules that
    only add artifacts (sweeps) build on it instead of training the tiny recipe again."""
    root = tmp_path_factory.mktemp("pipe")
    args = ["pipeline", "-e", "tiny", f"paths.checkpoints={root / 'ck'}", f"paths.runs={root / 'runs'}", "--quiet"]
    assert main(args) == 0
    return root, args
