"""Test settings: HYPOTHESIS_PROFILE=deep runs the generated-input tests far longer than CI does; fixtures
shared by the test modules."""
import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
settings.register_profile("deep", max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def deepspeed_world(monkeypatch):
    """DeepSpeedConfig checks train_batch_size against the world size it sees; show it the plan's."""
    import deepspeed.runtime.config as ds_config

    def set_world(world: int):
        monkeypatch.setattr(ds_config.dist, "get_rank", lambda *a, **k: 0)
        monkeypatch.setattr(ds_config.dist, "get_world_size", lambda *a, **k: world)
    return set_world


@pytest.fixture(scope="session")
def page_server():
    """`fitplan serve` on a free port for the whole session: its address."""
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    from web.browser import running_server
    with running_server() as url:
        yield url
