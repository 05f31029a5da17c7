"""Task model: specs, schema payloads, fingerprint, simulate/likelihood plumbing."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbi_core.observation import ObservationModality
from sbi_core.priors import LogUniformPrior, NormalPrior, UniformPrior
from sbi_core.task import (
    NoiseModelConfig,
    ObservationBlockSpec,
    ObservationSchema,
    ObservationValueConstraint,
    ParameterSpec,
    SBITask,
    SimulationConfig,
)


def _simulate(key, theta):
    return {
        "spec": {"values": jnp.repeat(theta[:1], 3) + jax.random.normal(key, (3,)), "uncertainties": jnp.ones(3)},
        "aux": {"values": theta},
    }


def _likelihood(theta, obs):
    r = obs["spec"]["values"] - theta[0]
    return jnp.sum(-0.5 * (r / obs["spec"]["uncertainties"]) ** 2)


def make_task(**changes) -> SBITask:
    fields = dict(
        name="toy",
        version="1",
        parameters=(
            ParameterSpec("a", "K", UniformPrior(0.0, 2.0)),
            ParameterSpec("b", "bar", LogUniformPrior(1e-3, 1.0)),
        ),
        observation_schema=ObservationSchema((
            ObservationBlockSpec("spec", "spectrum", 3, True, np.array([1.0, 2.0, 3.0]),
                                 ObservationValueConstraint(min_value=-10.0)),
            ObservationBlockSpec("aux", ObservationModality.AUXILIARY, 2, False),
        )),
        noise_model=NoiseModelConfig(parameters={"sigma": 1.0}),
        simulator=_simulate,
        likelihood=_likelihood,
        config={"k": [1, 2]},
    )
    fields.update(changes)
    return SBITask(**fields)


def test_payload_matches_store_format_and_round_trips():
    task = make_task()
    payload = json.loads(json.dumps(task.to_payload()))
    assert set(payload) >= {"name", "version", "parameters", "blocks", "noise_model"}
    assert payload["parameters"][1] == {"name": "b", "unit": "bar", "prior": {"kind": "log_uniform", "low": 1e-3, "high": 1.0}}
    assert payload["blocks"][1] == {"name": "aux", "modality": "auxiliary", "length": 2, "has_uncertainties": False}
    assert payload["blocks"][0]["coordinates"] == [1.0, 2.0, 3.0]
    assert payload["noise_model"] == {"mode": "observational", "parameters": {"sigma": 1.0}, "seed": None}
    schema = ObservationSchema.from_payload({"blocks": payload["blocks"]})
    assert schema == task.observation_schema
    assert [ParameterSpec.from_payload(p) for p in payload["parameters"]] == list(task.parameters)
    assert NoiseModelConfig.from_payload(payload["noise_model"]) == task.noise_model


def test_fingerprint_stable_across_processes():
    code = (
        "import sys; sys.path.insert(0, 'tests/sbi_core'); from test_task import make_task; "
        "print(make_task().fingerprint())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"JAX_PLATFORMS": "cpu", "PATH": ""})
    assert out.stdout.strip() == make_task().fingerprint()
    assert len(make_task().fingerprint()) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"name": "toy2"},
        {"version": "2"},
        {"parameters": (ParameterSpec("a", "K", UniformPrior(0.0, 2.5)), ParameterSpec("b", "bar", LogUniformPrior(1e-3, 1.0)))},
        {"parameters": (ParameterSpec("a", "C", UniformPrior(0.0, 2.0)), ParameterSpec("b", "bar", LogUniformPrior(1e-3, 1.0)))},
        {"noise_model": NoiseModelConfig(parameters={"sigma": 1.5})},
        {"noise_model": None},
        {"config": {"k": [1, 3]}},
        {"observation_schema": ObservationSchema((
            ObservationBlockSpec("spec", "spectrum", 3, True, np.array([1.0, 2.0, 3.5])),
            ObservationBlockSpec("aux", "auxiliary", 2, False)))},
    ],
)
def test_fingerprint_sensitive_to_any_change(change):
    assert make_task(**change).fingerprint() != make_task().fingerprint()


def test_simulate_and_likelihood_batch():
    task = make_task()
    theta = task.sample_prior(jax.random.key(0), 5)
    assert theta.shape == (5, 2) and task.parameter_names == ("a", "b") and task.parameter_dim == 2
    out = task.simulate(jax.random.key(1), theta)
    assert out["spec"]["values"].shape == (5, 3) and out["aux"]["values"].shape == (5, 2)
    ll = task.log_likelihood_batch(theta, {k: dict(v) for k, v in out.items()})
    single = [task.log_likelihood(theta[i], {k: {q: a[i] for q, a in v.items()} for k, v in out.items()}) for i in range(5)]
    np.testing.assert_allclose(ll, np.array(single), rtol=1e-5)
    grad = jax.grad(lambda t: task.log_likelihood(t, {k: {q: a[0] for q, a in v.items()} for k, v in out.items()}))(theta[0])
    assert bool(jnp.all(jnp.isfinite(grad)))


def test_input_errors_name_the_problem():
    task = make_task()
    with pytest.raises(ValueError, match=r"theta has shape \(3,\), expected \(n, 2\)"):
        task.simulate(jax.random.key(0), jnp.zeros(3))
    with pytest.raises(ValueError, match="observation has no block 'aux'"):
        task.log_likelihood(jnp.zeros(2), {"spec": {"values": jnp.zeros(3), "uncertainties": jnp.ones(3)}})
    with pytest.raises(ValueError, match="block 'spec' needs 'uncertainties'"):
        task.log_likelihood(jnp.zeros(2), {"spec": jnp.zeros(3), "aux": jnp.zeros(2)})
    with pytest.raises(ValueError, match=r"block 'aux' values has shape \(3,\), expected \(2,\)"):
        task.log_likelihood(jnp.zeros(2), {"spec": {"values": jnp.zeros(3), "uncertainties": jnp.ones(3)}, "aux": jnp.zeros(3)})
    with pytest.raises(NotImplementedError, match="no reference posterior"):
        task.reference_posterior_sample(jax.random.key(0), {}, 3)
    assert make_task(likelihood=None).log_likelihood(jnp.zeros(2), {}) is None


def test_schema_and_config_validation():
    with pytest.raises(ValueError, match="unknown modality 'image'"):
        ObservationBlockSpec("x", "image", 3, False)
    with pytest.raises(ValueError, match="length must be a positive integer"):
        ObservationBlockSpec("x", "spectrum", 0, False)
    with pytest.raises(ValueError, match="strictly increasing"):
        ObservationBlockSpec("x", "spectrum", 3, False, np.array([1.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"coordinates have shape \(2,\), expected \(3,\)"):
        ObservationBlockSpec("x", "spectrum", 3, False, np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="duplicate block names"):
        ObservationSchema((ObservationBlockSpec("x", "spectrum", 3, False),) * 2)
    with pytest.raises(KeyError, match="no block 'y'"):
        make_task().observation_schema.block("y")
    with pytest.raises(ValueError, match="num_simulations must be a positive integer"):
        SimulationConfig(num_simulations=-1)
    with pytest.raises(ValueError, match="min_value 2.0 > max_value 1.0"):
        ObservationValueConstraint(2.0, 1.0)
    with pytest.raises(ValueError, match="duplicate parameter names"):
        make_task(parameters=(ParameterSpec("a", "", NormalPrior(0, 1)),) * 2)
    assert SimulationConfig(10).chunk_size == 1024
    assert NoiseModelConfig() == NoiseModelConfig("observational", {}, None)


def test_constraint_payload_and_check():
    c = ObservationValueConstraint(min_value=0.0, max_value=1.0, max_inclusive=False)
    assert c.to_payload() == {"min_value": 0.0, "max_value": 1.0, "min_inclusive": True, "max_inclusive": False}
    assert ObservationValueConstraint.from_payload(c.to_payload()) == c
    np.testing.assert_array_equal(c.satisfied(np.array([-0.1, 0.0, 0.5, 1.0])), [False, True, True, False])


def test_task_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        make_task().name = "other"


def test_likelihood_accepts_observation_objects():
    from sbi_core.observation import (
        build_observation_block_batch,
        build_observation_blocks_from_sample,
    )

    task = make_task()
    theta = task.sample_prior(jax.random.key(0), 3)
    out = task.simulate(jax.random.key(1), theta)
    rows = [{b: {k: np.asarray(v[i]) for k, v in e.items()} for b, e in out.items()} for i in range(3)]
    blocks = [build_observation_blocks_from_sample(task.observation_schema, r) for r in rows]
    expected = task.log_likelihood_batch(theta, out)
    np.testing.assert_allclose(task.log_likelihood(theta[0], blocks[0]), expected[0], rtol=1e-5)
    stacked = build_observation_block_batch(blocks, task.observation_schema)
    np.testing.assert_allclose(task.log_likelihood_batch(theta, stacked), expected, rtol=1e-5)
