"""The pure processor: a topology run on single records (and batches), its compiled form, its stages,
decisions and state hooks. ``TopologyProcessor`` is what runtimes call."""

from topology.processor.compiled import COMPARE, EVALUATION_ERRORS
from topology.processor.processor import EvaluationError, TopologyProcessor

__all__ = ["COMPARE", "EVALUATION_ERRORS", "EvaluationError", "TopologyProcessor"]
