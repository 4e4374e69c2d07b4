import torch

from lifelong.data.arrays import ImageArrays
from lifelong.data.batches import Stream, TaskView, augment, eval_batches
from lifelong.data.scenarios import Task


def make_task(task_id=0, n=10, offset=0, permutation=None):
    images = torch.randint(0, 256, (n, 1, 3, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(task_id))
    labels = torch.arange(n) % 2
    arrays = ImageArrays(images, labels)
    return Task(id=task_id, name=f"t{task_id}", classes=[0, 1], class_names=["a", "b"], train=arrays, test=arrays,
                mean=(0.5,), std=(0.25,), permutation=permutation, label_offset=offset)


def test_inputs_are_normalised_and_permuted():
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    task = make_task(permutation=perm)
    view = TaskView(task, task.train, torch.device("cpu"))
    x = view.inputs(torch.tensor([3]))
    expected = ((task.train.images[3].flatten()[perm].float() / 255 - 0.5) / 0.25).view(1, 1, 3, 3)
    assert torch.allclose(x, expected, atol=1e-6)


def test_epoch_visits_every_sample_once_in_a_seeded_order():
    view = TaskView(make_task(n=10, offset=4), make_task(n=10).train, torch.device("cpu"))
    seen = []
    for x, y, t in Stream([view], 3, torch.Generator().manual_seed(0)).epoch():
        assert t == 0 and x.shape[1:] == (1, 3, 3)
        seen.append(y)
    assert len(seen) == 4 and sorted(torch.cat(seen).tolist()) == sorted((torch.arange(10) % 2 + 4).tolist())
    a = [y.tolist() for _, y, _ in Stream([view], 3, torch.Generator().manual_seed(1)).epoch()]
    b = [y.tolist() for _, y, _ in Stream([view], 3, torch.Generator().manual_seed(1)).epoch()]
    assert a == b


def test_mixed_stream_labels_each_sample_with_its_task():
    views = [TaskView(make_task(i, n=5 + i), make_task(i, n=5 + i).train, torch.device("cpu")) for i in range(3)]
    stream = Stream(views, 4, torch.Generator().manual_seed(0))
    ids, xs = [], []
    for x, y, t in stream.epoch():
        ids.append(t)
        xs.append(x)
    ids = torch.cat(ids)
    assert torch.bincount(ids).tolist() == [5, 6, 7] and len(stream) == 5
    # every input of task 1 is one of task 1's normalised images
    all_x = torch.cat(xs)
    own = views[1].inputs(torch.arange(6))
    for row in all_x[ids == 1]:
        assert (own - row).abs().flatten(1).sum(1).min() < 1e-6


def test_augment_crops_and_flips_deterministically():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    a = augment(x, torch.Generator().manual_seed(3), pad=1)
    b = augment(x, torch.Generator().manual_seed(3), pad=1)
    assert a.shape == x.shape and torch.equal(a, b)
    assert torch.equal(augment(x, torch.Generator().manual_seed(0), pad=0).flip(3).sort(3)[0], x.sort(3)[0])
    # each output is a shifted (and possibly flipped) window of the zero-padded input
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for i in range(2):
        windows = [padded[i, :, r:r + 4, c:c + 4] for r in range(3) for c in range(3)]
        assert any(torch.equal(a[i], w) or torch.equal(a[i], w.flip(2)) for w in windows)


def test_eval_batches_cover_the_split_in_order():
    task = make_task(n=7)
    view = TaskView(task, task.train, torch.device("cpu"))
    ys = torch.cat([y for _, y in eval_batches(view, 3)])
    assert torch.equal(ys, task.train.labels)


def test_a_batch_carries_the_raw_rows_its_inputs_came_from():
    """Single and mixed streams, augmented or not: raw = the stored uint8 rows, rows = their index in the view,
    and without augmentation the inputs are exactly the view's preparation of the raw rows."""
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(3))
    views = [TaskView(make_task(i, n=6 + i, permutation=perm), make_task(i, n=6 + i, permutation=perm).train,
                      torch.device("cpu")) for i in range(3)]
    for chosen in (views[:1], views):
        for augmented in (False, True):
            stream = Stream(chosen, 4, torch.Generator().manual_seed(0), augment=augmented)
            count = 0
            for batch in stream.epoch():
                ids = torch.full_like(batch.targets, batch.task_ids) if isinstance(batch.task_ids, int) else batch.task_ids
                for i in range(len(batch.targets)):
                    view = views[int(ids[i])]
                    row = int(batch.rows[i])
                    assert torch.equal(batch.raw[i], view.images[row]) and batch.targets[i] == view.targets[row]
                if not augmented:
                    prepared = torch.cat([views[int(ids[i])].prepare(batch.raw[i : i + 1]) for i in range(len(ids))])
                    assert torch.equal(batch.inputs, prepared)
                assert batch.raw.dtype == torch.uint8
                count += len(batch.targets)
            assert count == sum(len(v) for v in chosen)
