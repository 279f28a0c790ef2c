"""Hypothesis profiles: ``ci`` (default; derandomized so main stays reproducibly green) and ``dev``.

Select with ``HYPOTHESIS_PROFILE=dev pytest`` for a longer, randomized search.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=15,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=200, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
