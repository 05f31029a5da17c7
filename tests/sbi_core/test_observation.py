"""Observation blocks, batches, builders and their schema checks."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbi_core.batch import PosteriorBatch
from sbi_core.compatibility import TaskCompatibilityError
from sbi_core.observation import (
    EncodedObservation,
    ObservationBlock,
    ObservationEncoder,
    ObservationModality,
    PreStackedObservations,
    build_observation_block,
    build_observation_block_batch,
    build_observation_blocks_from_sample,
)
from sbi_core.task import ObservationBlockSpec, ObservationSchema

SCHEMA = ObservationSchema(
    (
        ObservationBlockSpec("spectrum", ObservationModality.SPECTRUM, 4, True, coordinates=np.array([1.0, 2, 3, 4])),
        ObservationBlockSpec("context", ObservationModality.AUXILIARY, 2, False),
    )
)


def _obs(shift=0.0, mask=None):
    return [
        ObservationBlock("spectrum", "spectrum", np.arange(4.0) + shift, uncertainties=np.ones(4), mask=mask),
        ObservationBlock("context", ObservationModality.AUXILIARY, [shift, 1.0]),
    ]


def test_fields_in_reference_order_and_modality_string_accepted():
    assert [f.name for f in dataclasses.fields(ObservationBlock)] == ["name", "modality", "values", "uncertainties", "coordinates", "mask", "metadata"]
    for modality in ObservationModality:
        block = ObservationBlock("b", modality.value, [1.0, 2.0])
        assert block.modality is modality and block.values.dtype == np.float64
    assert ObservationModality.TIME_SERIES == "time_series"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"modality": "radio"}, r"block 'b'.modality: unknown modality 'radio'; expected one of 'spectrum', 'photometry', 'time_series', 'auxiliary'"),
        ({"values": [[1.0, 2.0]]}, r"block 'b'.values: expected a 1-D array, got shape \(1, 2\)"),
        ({"uncertainties": [1.0]}, r"block 'b'.uncertainties: expected shape \(2,\) like values, got \(1,\)"),
        ({"uncertainties": [1.0, 0.0]}, r"uncertainties: element 1 is 0.0 \(expected finite and > 0\)"),
        ({"values": [1.0, np.nan]}, r"values: element 1 is nan \(expected finite, or masked out\)"),
        ({"coordinates": [2.0, 1.0]}, r"coordinates: expected finite, strictly increasing"),
        ({"mask": [1, 0]}, r"mask: expected a bool array"),
        ({"name": ""}, r"name: expected a non-empty string"),
    ],
)
def test_block_validation_errors(kwargs, message):
    args = {"name": "b", "modality": "spectrum", "values": [1.0, 2.0], **kwargs}
    with pytest.raises(ValueError, match=message):
        ObservationBlock(**args)


def test_masked_elements_may_hold_nan():
    block = ObservationBlock("b", "time_series", [1.0, np.nan], uncertainties=[1.0, np.nan], mask=np.array([True, False]))
    batch = build_observation_block_batch([block], ObservationSchema((ObservationBlockSpec("b", ObservationModality.TIME_SERIES, 2, True),)))
    np.testing.assert_array_equal(batch.values["b"], [[1.0, 0.0]])
    np.testing.assert_array_equal(batch.uncertainties["b"], [[1.0, 1.0]])
    np.testing.assert_array_equal(batch.masks["b"], [[True, False]])


def test_batch_stacks_observations_and_indexes_as_pytree():
    batch = build_observation_block_batch([_obs(0.0), _obs(1.0, mask=np.array([True, True, False, True]))], SCHEMA)
    assert batch.batch_size == 2 and batch.values["spectrum"].dtype == np.float32
    assert set(batch.uncertainties) == {"spectrum"} and set(batch.masks) == {"spectrum"}
    np.testing.assert_array_equal(batch.masks["spectrum"][0], np.ones(4, bool))
    first = batch[0:1]
    assert first.batch_size == 1 and first.values["context"].tolist() == [[0.0, 1.0]]
    doubled = jax.jit(lambda o: jax.tree_util.tree_map(lambda a: a * 2, o))(jax.tree_util.tree_map(jnp.asarray, batch))
    assert isinstance(doubled, PreStackedObservations)
    np.testing.assert_allclose(doubled.values["spectrum"][1], [2, 4, 0, 8])
    single = build_observation_block_batch(_obs(), SCHEMA)  # a flat list is one observation
    assert single.batch_size == 1


def test_batch_schema_errors_list_every_problem():
    bad = [
        ObservationBlock("spectrum", "spectrum", np.arange(5.0)),
        ObservationBlock("extra", "auxiliary", [1.0]),
    ]
    with pytest.raises(TaskCompatibilityError) as info:
        build_observation_block_batch([_obs(), bad], SCHEMA)
    text = str(info.value)
    assert "observation 1 against the observation schema: 4 problems" in text
    assert "missing block(s) ['context']" in text and "unexpected block(s) ['extra']" in text
    assert "block 'spectrum': length 5, expected 4" in text
    assert "block 'spectrum': missing uncertainties" in text
    assert isinstance(info.value, ValueError)


def test_build_block_uses_spec_coordinates_and_checks_it():
    block = build_observation_block(SCHEMA.block("spectrum"), np.zeros(4), np.ones(4))
    np.testing.assert_array_equal(block.coordinates, [1, 2, 3, 4])
    assert block.modality is ObservationModality.SPECTRUM
    with pytest.raises(TaskCompatibilityError, match="has uncertainties but the schema has none"):
        build_observation_block(SCHEMA.block("context"), np.zeros(2), np.ones(2))


def test_blocks_from_simulated_sample_in_schema_order():
    sample = {"context": {"values": np.array([1.0, 2.0])}, "spectrum": {"values": np.zeros(4), "uncertainties": np.ones(4)}}
    blocks = build_observation_blocks_from_sample(SCHEMA, sample)
    assert [b.name for b in blocks] == ["spectrum", "context"]
    with pytest.raises(TaskCompatibilityError, match=r"missing block\(s\) \['context'\]"):
        build_observation_blocks_from_sample(SCHEMA, {"spectrum": sample["spectrum"]})


def test_posterior_batch_checks_batch_sizes():
    obs = build_observation_block_batch([_obs(), _obs()], SCHEMA)
    assert PosteriorBatch(np.zeros((2, 3)), obs).batch_size == 2
    with pytest.raises(ValueError, match="parameters have 3 rows but observations have 2"):
        PosteriorBatch(np.zeros((3, 3)), obs)


def test_encoder_is_abstract_and_encoded_observation_checks_shape():
    with pytest.raises(TypeError):
        ObservationEncoder()

    class Mean(ObservationEncoder):
        def __call__(self, values, uncertainties, mask):
            return jnp.mean(values, keepdims=True)

    assert Mean()(jnp.ones(3), None, None).shape == (1,)
    assert EncodedObservation(np.zeros(5)).embedding.shape == (5,)
    with pytest.raises(ValueError, match=r"expected shape \(E,\)"):
        EncodedObservation(np.zeros((2, 5)))
