"""Errors a user can cause. The CLI prints these as one line and exits with 1.

Every class derives from :class:`AtlasError`; those that are also a standard
exception (``ValueError``, ``FileNotFoundError``) derive from it too, so plain
Python callers can catch what they expect.
"""

from __future__ import annotations


class AtlasError(Exception):
    """Base class of every error saeatlas raises for bad input or bad state."""


class ConfigError(AtlasError, ValueError):
    """A configuration field or option has a bad value."""


class HookpointError(AtlasError, ValueError):
    """A layer name, glob or regex matches no module of the model."""


class ShapeError(AtlasError, ValueError):
    """Activations have a shape saeatlas cannot turn into rows."""


class NonFiniteError(AtlasError, ValueError):
    """Captured activations contain NaN or Inf."""


class StoreError(AtlasError):
    """An activation store is missing, incomplete or corrupt."""


class ChecksumError(StoreError):
    """A shard's sha256 does not match the one in the manifest."""


class ModelSpecError(AtlasError, ValueError):
    """A model specification cannot be resolved into a model."""


class InputsError(AtlasError, ValueError):
    """Inputs cannot be read or turned into batches."""


class ModelError(AtlasError, RuntimeError):
    """The model's forward pass failed on the inputs it was given."""


class TrainingDiverged(AtlasError, RuntimeError):
    """The loss or the weights became NaN/Inf during training."""


class DistributedError(AtlasError, RuntimeError):
    """Another rank of a ``torchrun`` job failed, died or took too long."""
