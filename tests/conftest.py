"""Test settings: HYPOTHESIS_PROFILE=deep runs the generated-input tests far longer than CI does."""
import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
settings.register_profile("deep", max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
