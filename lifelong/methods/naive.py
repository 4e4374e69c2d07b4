"""Naive fine-tuning: train on each task in turn with no protection against forgetting (the lower bound)."""

from lifelong.methods.base import Method


class Naive(Method):
    name = "naive"
    task_free = True
    description = "fine-tuning on each task in turn; the lower bound"
