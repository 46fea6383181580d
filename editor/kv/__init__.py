"""Shared key/value machinery used by every MLP-editing method."""

from suture.editor.kv.corpus import CorpusSpec
from suture.editor.kv.keys import compute_keys
from suture.editor.kv.stats import second_moment
from suture.editor.kv.templates import TemplateSpec, context_templates
from suture.editor.kv.values import ValueObjective, ValueSolution, optimize_values

__all__ = ["CorpusSpec", "TemplateSpec", "ValueObjective", "ValueSolution", "compute_keys", "context_templates",
           "optimize_values", "second_moment"]
