__version__ = "0.1.0"


def __getattr__(name: str):
    """``from xelm import ExpertEnsembleForCausalLM`` (or ``import xelm.infer.generation``)
    also registers ``xelm_ensemble`` with transformers' Auto classes, so a saved ensemble
    loads with ``AutoModelForCausalLM.from_pretrained``. Lazy: ``import xelm`` alone loads
    no torch, so the command line answers in milliseconds."""
    if name == "ExpertEnsembleForCausalLM":
        from xelm.infer.generation import ExpertEnsembleForCausalLM

        return ExpertEnsembleForCausalLM
    raise AttributeError(f"module 'xelm' has no attribute {name!r}")
