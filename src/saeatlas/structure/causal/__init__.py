"""Causal checks: ablating modules in the model, and lesions of single units."""
