"""The ``saeatlas`` command line: one thin command per pipeline stage.

Each command parses options and calls one documented Python function. User
errors (:class:`~saeatlas.errors.AtlasError`) become one line on stderr and
exit code 1 (in :mod:`.app`); ``--debug`` shows the traceback.

- :mod:`.app`: the typer app, error handling and the entry point;
- :mod:`.options`: the options several commands share (``--on-nonfinite``,
  ``--model-class``, ``--timeout``);
- :mod:`.store`: ``layers``, ``capture``, ``info``;
- :mod:`.sae`: ``train``, ``evaluate``, ``import-saelens``, ``export-saelens``, ``sweep``;
- :mod:`.atlas`: ``analyze``, ``validate``, ``report`` and the atlas tables;
- :mod:`.runs`: ``run`` and ``demo``;
- :mod:`.interop`: ``import-sparsify``, ``export-neuronpedia``.
"""

from importlib import import_module

from .._launcher import stop_with_launcher

# Before the imports below, which take seconds: a `kill -9` of torchrun meanwhile
# must stop this rank too (saeatlas._launcher).
stop_with_launcher()

from .app import _expand_multi_value, app, main  # noqa: E402

# Importing a command module registers its commands; this order is --help's.
for _name in ("store", "sae", "atlas", "runs", "interop"):
    import_module(f"{__name__}.{_name}")

__all__ = ["_expand_multi_value", "app", "main"]
