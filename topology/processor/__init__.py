"""The pure processor: a topology run on single records (and batches), its compiled form, its stages,
decisions, state hooks and dead letters. ``TopologyProcessor`` is what runtimes call."""

from topology.processor.compiled import COMPARE, EVALUATION_ERRORS
from topology.processor.processor import TopologyProcessor
from topology.processor.rejects import EvaluationError

__all__ = ["COMPARE", "EVALUATION_ERRORS", "EvaluationError", "TopologyProcessor"]
