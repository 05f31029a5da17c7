"""Observation blocks: modality enum (minimal stub; extended by the observation module owner)."""

from __future__ import annotations

from enum import Enum


class ObservationModality(str, Enum):
    """Kind of an observation block; it picks the encoder of the block."""

    SPECTRUM = "spectrum"
    PHOTOMETRY = "photometry"
    TIME_SERIES = "time_series"
    AUXILIARY = "auxiliary"
