"""Suite-wide settings and fixtures.

Hypothesis: no per-example deadline and no "too slow" health check. This machine
and CI are shared 2-core boxes; a slow moment must not fail a property test.
``SOAK=1`` (``make soak``) runs many more examples.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# the local S3 server's fixtures, for every test module that names one (imported into a
# test module instead, a fixture reads as redefined where a test takes it as an argument)
from tests.s3server import moto_endpoint, moto_process, s3_env

__all__ = ["moto_endpoint", "moto_process", "s3_env"]

settings.register_profile(
    "tickrec", deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    max_examples=1000 if os.environ.get("SOAK") else 100)
settings.load_profile("tickrec")
