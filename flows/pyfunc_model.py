"""The MLflow pyfunc model, logged as "models from code" (nothing is cloudpickled).

MLflow stores this file with the model and executes it at load time; ``set_model`` below names
the model object. The only artifact is ``posterior``: the saved posterior directory
(metadata.json + weights), loaded with the library's own checksummed ``load``. See
``flows/pyfunc_io.py`` for the request contract.
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

#: Name of the artifact holding the saved posterior directory.
POSTERIOR_ARTIFACT = "posterior"
#: Smallest padded number of observations per request (rows are padded to a power of two).
ROW_BUCKET_SMALLEST = 1


class SbiPosteriorModel(PythonModel):
    """Amortized posterior behind ``/invocations``: observations in, physical-unit draws out."""

    def load_context(self, context: Any) -> None:
        """Load the saved posterior directory and compile the sampling path once.

        Warm-up: one request with the input example at the default ``num_samples`` so the first
        real request does not pay for JIT compilation (a request with another ``num_samples`` or
        batch size still compiles once for its shapes).
        """
        from sbi_core.posterior_base import PersistentPosteriorEstimator
        from sbi_core.posterior_metadata import observation_schema_from_payload

        from flows.pyfunc_io import block_columns, example_frame

        self.posterior = PersistentPosteriorEstimator.load(context.artifacts[POSTERIOR_ARTIFACT])
        self.columns = block_columns(observation_schema_from_payload(self.posterior.observation_schema))
        self.predict(context, example_frame(self.columns), params=None)

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would build a signature from them
        """Sample the posterior of every row of ``model_input``.

        Args:
            context: MLflow context (unused).
            model_input: DataFrame, one row per observation (see module docstring).
            params: ``num_samples`` (default 1000, capped by ``$SBI_OPS_MAX_NUM_SAMPLES``) and
                ``seed`` (default: the model's seed).

        Returns:
            DataFrame of ``num_samples`` rows per observation: one column per parameter name
            (physical units) and ``observation_index``.

        Raises:
            MlflowException: ``INVALID_PARAMETER_VALUE`` (HTTP 400) for any bad request.
        """
        from flows.pyfunc_io import RequestError, parse_frame, parse_params

        try:
            rows = parse_frame(model_input, self.columns)
            num_samples, seed = parse_params(params, default_seed=int(self.posterior.seed))
            return self._sample(rows, num_samples, seed)
        except RequestError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        except ValueError as exc:  # the library's own input checks (schema compatibility, ...)
            raise MlflowException(f"invalid observation: {exc}", error_code=INVALID_PARAMETER_VALUE) from None

    def _sample(self, rows: list[dict[str, Any]], num_samples: int, seed: int) -> Any:
        import numpy as np
        from sbi_core.posterior_base import PosteriorSamples

        from flows.pyfunc_io import bucket, observation_blocks, samples_frame

        posterior = self.posterior
        # Pad to power-of-two shapes: JIT compiles once per shape, so bucketing bounds both the
        # compilation latency a client sees and the memory held by compiled executables. Rows are
        # bucketed from 1 (1, 2, 4, ...): padding one observation to 8 sampled 8x the draws
        # asked for (benchmarks/bench_serving.py).
        blocks = [observation_blocks(r, self.columns) for r in rows]
        blocks += [blocks[0]] * (bucket(len(blocks), smallest=ROW_BUCKET_SMALLEST) - len(blocks))
        encoded = posterior.batch_encode_observation(blocks)
        embeddings = np.stack([np.asarray(e.embedding, np.float32) for e in encoded])
        draws = np.asarray(posterior.batch_sample_posterior(embeddings, bucket(num_samples), base_seed=seed))
        flat = PosteriorSamples(samples=draws.reshape(-1, draws.shape[-1]),
                                metadata={"parameter_space": posterior.parameter_space})
        physical = np.asarray(posterior.to_physical(flat).samples).reshape(draws.shape)
        return samples_frame(physical[:len(rows), :num_samples], posterior.parameter_names)


mlflow.models.set_model(SbiPosteriorModel())
