"""Shared fixtures of the engine adapter tests: a real `strata serve` (STRATA_CLI) per test module,
and the reference engine's tiny model. vLLM is imported by the tests, once per pytest process."""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools", "reference_engine"))


@pytest.fixture(scope="module")
def strata_node():
    import reference_engine
    nodes = reference_engine.StrataNodes(os.environ["STRATA_CLI"], pool="256MiB")
    yield nodes.sockets[0]
    nodes.close()
