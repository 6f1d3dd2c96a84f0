"""Scoring text with a model: perplexity and bits per character, neural cache, dynamic
evaluation, and the methods `lstmlm evaluate` offers on top of them."""

from lstmlm.evaluation.cache import CacheConfig, cache_evaluate, cache_search
from lstmlm.evaluation.dynamic import DynamicConfig, dynamic_evaluate
from lstmlm.evaluation.methods import Scores
from lstmlm.evaluation.perplexity import EvalResult, evaluate, result, token_nlls

__all__ = [
    "CacheConfig", "DynamicConfig", "EvalResult", "Scores", "cache_evaluate", "cache_search",
    "dynamic_evaluate", "evaluate", "result", "token_nlls",
]  # fmt: skip
