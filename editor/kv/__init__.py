"""Shared key/value machinery used by every MLP-editing method."""

from editor.kv.corpus import CorpusSpec
from editor.kv.keys import compute_keys
from editor.kv.stats import second_moment
from editor.kv.templates import TemplateSpec, context_templates
from editor.kv.values import ValueObjective, ValueSolution, optimize_values

__all__ = ["CorpusSpec", "TemplateSpec", "ValueObjective", "ValueSolution", "compute_keys", "context_templates",
           "optimize_values", "second_moment"]
