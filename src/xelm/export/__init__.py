"""Export a finished run for serving and sharing.

* :mod:`xelm.export.moe` -- the experts' feed-forward layers as the experts of one
  standard HF mixture-of-experts model (``MixtralForCausalLM``), the rest averaged;
* :mod:`xelm.export.gates` -- its router, initialised from the languages' validation
  text and optionally tuned on the mixed training data (BTX);
* :mod:`xelm.export.mergekit` -- a mergekit-moe YAML for users of mergekit's own merge;
* :mod:`xelm.export.cards` -- model cards for experts, dense model and exports;
* :mod:`xelm.export.push` -- the Hugging Face Hub upload plan and the upload;
* :mod:`xelm.export.commands` -- :func:`~xelm.export.commands.export_run`, what
  ``xelm export`` does.

Nothing heavy is imported here.
"""
