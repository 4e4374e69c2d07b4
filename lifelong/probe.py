"""Linear probes (``train.probe``): how well a linear classifier on the network's frozen features still tells a
task's classes apart, next to the method's own accuracy (docs/inspect.md, "Linear probe")."""

from __future__ import annotations

import torch

from lifelong.data.batches import TaskView, eval_batches
from lifelong.methods.base import Method

RIDGE = 1e-3  # the ridge term, relative to the mean diagonal of the features' Gram matrix


def head_inputs(method: Method, x: torch.Tensor, task_id: int) -> torch.Tensor:
    """The features the method's prediction feeds its output layer (masks, knowledge bases and all), or the
    backbone's features when its prediction uses no head (iCaRL's nearest mean)."""
    network = method.network_for(task_id)
    network = network if hasattr(network, "heads") else network.network  # mark: the network inside its model
    seen: list[torch.Tensor] = []
    hooks = [head.register_forward_pre_hook(lambda _, args: seen.append(args[0])) for head in network.heads.values()]
    try:
        method.predict(x, task_id)
    finally:
        for hook in hooks:
            hook.remove()
    return (seen[-1] if seen else network.features(x, task_id)).flatten(1)


def _design(method: Method, view: TaskView, batch_size: int):
    """(features with a constant column, task-local labels) batch by batch, in float64."""
    for x, y in eval_batches(view, batch_size):
        z = head_inputs(method, x, view.task.id).double()
        yield torch.cat([z, z.new_ones(z.shape[0], 1)], 1), y - view.task.label_offset


def probe_accuracy(method: Method, train: TaskView, test: TaskView, batch_size: int) -> float:
    """Test accuracy of a ridge-regression classifier (one-hot targets, closed form: no random numbers, no
    steps) fitted on the frozen features of the task's training split."""
    method.model.eval()
    classes = train.task.num_classes
    with torch.inference_mode():
        gram = target = None
        for z, y in _design(method, train, batch_size):
            g, t = z.t() @ z, z.t() @ torch.nn.functional.one_hot(y, classes).double()
            gram, target = (g, t) if gram is None else (gram + g, target + t)
        if gram is None:
            return 0.0
        ridge = RIDGE * gram.diagonal().mean().clamp_min(1e-12)
        weights = torch.linalg.solve(gram + ridge * torch.eye(len(gram), dtype=gram.dtype, device=gram.device), target)
        correct = sum(int(((z @ weights).argmax(1) == y).sum()) for z, y in _design(method, test, batch_size))
    return correct / max(1, len(test))
