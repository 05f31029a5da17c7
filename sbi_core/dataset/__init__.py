"""The simulation store, format 1.0: reader, writer, splits, fingerprint.

``from sbi_core.dataset import open_store`` is the entry point scripts rely on; the format is
specified in ``docs/store-format.md``.
"""

from sbi_core.dataset.create import create_store
from sbi_core.dataset.errors import StoreExistsError, StoreFormatError, StoreIncompleteError, StoreLockedError, StorePathError
from sbi_core.dataset.fingerprint import store_fingerprint
from sbi_core.dataset.layout import FORMAT_VERSION, SPLIT_NAMES
from sbi_core.dataset.manifest import canonical_json, parse_manifest
from sbi_core.dataset.reader import DEFAULT_MEMORY_BUDGET_BYTES, SimulationStore, open_store
from sbi_core.dataset.simulate import create_simulation_store, simulate_chunks, simulate_to_store
from sbi_core.dataset.splits import DEFAULT_SPLIT_FRACTIONS, DEFAULT_SPLIT_SEED, default_split_codes, default_split_indices
from sbi_core.dataset.writer import StoreWriter

__all__ = [
    "FORMAT_VERSION",
    "SPLIT_NAMES",
    "DEFAULT_MEMORY_BUDGET_BYTES",
    "DEFAULT_SPLIT_FRACTIONS",
    "DEFAULT_SPLIT_SEED",
    "SimulationStore",
    "StoreWriter",
    "StoreFormatError",
    "StoreIncompleteError",
    "StoreExistsError",
    "StoreLockedError",
    "StorePathError",
    "open_store",
    "create_store",
    "simulate_to_store",
    "create_simulation_store",
    "simulate_chunks",
    "store_fingerprint",
    "parse_manifest",
    "canonical_json",
    "default_split_codes",
    "default_split_indices",
]
