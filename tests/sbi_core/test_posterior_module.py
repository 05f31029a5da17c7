"""The ``sbi_core.posterior`` re-export module: every name, and a light import for flow-only use."""

from __future__ import annotations

import subprocess
import sys


def test_every_exported_name_resolves_including_the_lazy_flow_matching_backend():
    import sbi_core.posterior as posterior
    from sbi_core.flow_matching_posterior import FlowMatchingPosterior

    assert "FlowMatchingPosterior" in posterior.__all__
    for name in posterior.__all__:
        assert getattr(posterior, name) is not None, name
    assert posterior.FlowMatchingPosterior is FlowMatchingPosterior
    from sbi_core.posterior import FlowMatchingPosterior as again  # the from-import form too

    assert again is FlowMatchingPosterior


def test_a_flow_only_import_does_not_load_the_ode_stack():
    code = ("import sys; from sbi_core.posterior import ConditionalFlowPosterior; "
            "from sbi_core.estimator_registry import split_fit_options; "
            "print(sorted(m for m in ('diffrax', 'optimistix', 'sbi_core.flow_matching_posterior') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_an_unknown_name_raises_attribute_error():
    import pytest

    import sbi_core.posterior as posterior

    with pytest.raises(AttributeError, match="no attribute 'NoSuchPosterior'"):
        posterior.NoSuchPosterior  # noqa: B018
