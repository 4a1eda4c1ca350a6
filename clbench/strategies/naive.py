"""Naive fine-tuning: plain SGD on each experience in turn, the lower bound every method must beat."""

from clbench.strategies.base import SGDStrategy
from clbench.strategies.registry import register


@register("naive")
class Naive(SGDStrategy):
    """Fine-tunes the model on each new experience with no protection against forgetting."""

    def __init__(self):
        pass
