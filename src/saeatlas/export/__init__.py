"""Exports of an atlas to other tools' formats (Neuronpedia)."""

from .neuronpedia import BATCH_SCHEMA, NeuronpediaConfig, export_neuronpedia, read_batches

__all__ = ["BATCH_SCHEMA", "NeuronpediaConfig", "export_neuronpedia", "read_batches"]
