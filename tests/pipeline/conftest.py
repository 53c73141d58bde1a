"""One quick demo run shared by the pipeline tests (copy it before changing it)."""

import pytest


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """``run_demo`` at the tests' size, and the stage outcomes it reported."""
    from saeatlas.demo import run_demo

    seen = []
    result = run_demo(
        tmp_path_factory.mktemp("demo") / "run", quick=True, progress=False, on_stage=seen.append
    )
    return result, seen
