"""The replay memory: reservoir sampling is uniform over the stream, class balance is exact, the budget holds,
and its state round-trips."""

import pytest
import torch

from lifelong.methods.memory import Memory, MemoryRows, balanced_counts, rank_within_class

CPU = torch.device("cpu")


def rows(start, n, classes=None, generator=None):
    """n rows whose raw content is their stream position (int16 keeps positions up to 32767)."""
    position = torch.arange(start, start + n)
    targets = position % 3 if classes is None else torch.randint(0, classes, (n,), generator=generator)
    return MemoryRows(position.view(-1, 1).to(torch.int16), targets, torch.zeros(n, dtype=torch.int64))


def test_reservoir_holds_every_stream_position_with_equal_probability():
    """1000 memories of 10 rows over a stream of 100 (batches of 7): each position is held 1000·10/100 = 100
    times in expectation; a chi-square test with 99 degrees of freedom at a fixed seed."""
    size, stream, trials = 10, 100, 1000
    held = torch.zeros(stream)
    for trial in range(trials):
        memory = Memory(size, CPU, seed=trial)
        for start in range(0, stream, 7):
            memory.add(rows(start, min(7, stream - start)))
        assert len(memory) == size
        positions = memory.rows().raw.flatten().long()
        assert positions.unique().numel() == size  # no row held twice
        held[positions] += 1
    expected = trials * size / stream
    chi2 = float(((held - expected) ** 2 / expected).sum())
    assert chi2 < 135.8  # the 99.1 % quantile of chi-square with 99 degrees of freedom


def test_reservoir_keeps_the_later_of_two_rows_drawing_one_slot_as_sequential_insertion_would():
    """Batch insertion equals inserting the same rows one at a time with the same draws."""
    a, b = Memory(5, CPU, seed=3), Memory(5, CPU, seed=3)
    for start in range(0, 60, 12):
        a.add(rows(start, 12))
    for position in range(60):
        b.add(rows(position, 1))
    # the draws differ in grouping but not in order: one uniform per row past the fill, in stream order
    assert torch.equal(a.rows().raw, b.rows().raw)


def test_the_memory_never_exceeds_its_budget_and_fills_in_order():
    memory = Memory(8, CPU, seed=0)
    memory.add(rows(0, 5))
    assert len(memory) == 5 and memory.rows().raw.flatten().tolist() == [0, 1, 2, 3, 4]
    for start in range(5, 500, 13):
        memory.add(rows(start, 13))
        assert len(memory) == 8 and memory.raw.shape[0] == 8


@pytest.mark.parametrize("available,size,expected", [([10, 1, 5, 0, 7], 12, {(4, 1, 3, 0, 4), (3, 1, 4, 0, 4),
                                                                                 (4, 1, 4, 0, 3)}),
                                                      ([2, 2], 10, {(2, 2)}), ([9, 9, 9], 9, {(3, 3, 3)})])
def test_water_filling_is_the_balanced_count(available, size, expected):
    counts = balanced_counts(torch.tensor(available), size, torch.Generator().manual_seed(0))
    assert tuple(counts.tolist()) in expected and int(counts.sum()) == min(size, sum(available))


def test_class_balanced_counts_are_exact_after_every_batch():
    """The counts after each batch: the water-filled balance of what was held plus what came (by hand)."""
    g = torch.Generator().manual_seed(1)
    memory = Memory(12, CPU, seed=0, policy="balanced")
    memory.add(MemoryRows(torch.zeros(10, 1, dtype=torch.int16), torch.tensor([0] * 10), torch.zeros(10, dtype=torch.int64)))
    assert memory.class_counts(3).tolist() == [10, 0, 0]
    memory.add(MemoryRows(torch.zeros(4, 1, dtype=torch.int16), torch.tensor([1, 1, 1, 1]), torch.zeros(4, dtype=torch.int64)))
    # 2 fill the free slots; the other 2 each evict a row of the largest class, as GDumb's greedy rule would
    assert memory.class_counts(3).tolist() == [8, 4, 0]
    memory.add(MemoryRows(torch.zeros(3, 1, dtype=torch.int16), torch.tensor([2, 2, 2]), torch.zeros(3, dtype=torch.int64)))
    assert memory.class_counts(3).tolist() == [5, 4, 3]  # GDumb: [7, 4, 1], [6, 4, 2], [5, 4, 3]
    for _ in range(20):  # a long random stream over 4 classes: balanced to within one
        memory.add(rows(0, 16, classes=4, generator=g))
        counts = memory.class_counts(4)
        assert int(counts.sum()) == 12 and int(counts.max() - counts.min()) <= 1


def test_class_balanced_memory_keeps_offered_rows_in_arrival_order():
    memory = Memory(4, CPU, seed=0, policy="balanced")
    memory.add(MemoryRows(torch.arange(4).view(-1, 1).short(), torch.tensor([0, 0, 0, 0]), torch.zeros(4, dtype=torch.int64)))
    memory.add(MemoryRows(torch.arange(10, 15).view(-1, 1).short(), torch.tensor([1, 1, 1, 1, 1]),
                          torch.zeros(5, dtype=torch.int64)))
    held = memory.rows()
    assert sorted(held.raw[held.targets == 1].flatten().tolist()) == [10, 11]  # the first two of class 1



def test_class_balanced_memory_counts_a_class_per_task_where_targets_repeat():
    """Task- and domain-incremental targets are each task's own 0..k-1: the balance is over (task, target) pairs,
    so a later task's rows are kept rather than refused as more of classes already held."""
    memory = Memory(40, CPU, seed=0, policy="balanced")
    for task in range(4):
        targets = torch.arange(100) % 2
        memory.add(MemoryRows(torch.zeros(100, 1, dtype=torch.int16), targets, torch.full((100,), task)))
    held = memory.rows()
    assert torch.bincount(held.task_ids, minlength=4).tolist() == [10, 10, 10, 10]
    pairs = torch.bincount(held.task_ids * 2 + held.targets, minlength=8)
    assert pairs.tolist() == [5] * 8


def test_class_balance_over_global_targets_is_unchanged_by_the_task_ids():
    """Class-incremental targets are global (task t's lie above task t-1's): keying classes by (task, target)
    gives the same rows, draw for draw, as keying them by target alone."""
    def fill(task_of):
        memory = Memory(10, CPU, seed=3, policy="balanced")
        g = torch.Generator().manual_seed(5)
        for start in range(0, 120, 12):
            targets = torch.randint(0, 6, (12,), generator=g)
            raw = torch.arange(start, start + 12).view(-1, 1).short()
            memory.add(MemoryRows(raw, targets, task_of(targets)))
        return memory.rows().raw.flatten().tolist()

    assert fill(lambda t: t // 2) == fill(lambda t: torch.zeros_like(t))

def test_rank_within_class():
    assert rank_within_class(torch.tensor([3, 1, 3, 3, 1, 0])).tolist() == [0, 0, 1, 2, 1, 0]


def test_state_round_trip_continues_identically():
    a = Memory(6, CPU, seed=5, logit_width=3)
    logits = torch.randn(40, 2)
    a.add(MemoryRows(torch.arange(20).view(-1, 1), torch.arange(20) % 2, torch.zeros(20, dtype=torch.int64),
                     logits[:20]))
    b = Memory(6, CPU, seed=99, logit_width=3)
    b.load_state_dict(a.state_dict())
    for m in (a, b):
        m.add(MemoryRows(torch.arange(20, 40).view(-1, 1), torch.arange(20) % 2, torch.ones(20, dtype=torch.int64),
                         logits[20:]))
    ra, rb = a.rows(), b.rows()
    assert torch.equal(ra.raw, rb.raw) and torch.equal(ra.task_ids, rb.task_ids)
    assert torch.equal(ra.logits[:, :2], rb.logits[:, :2]) and ra.logits[:, 2].isnan().all()
    assert torch.equal(a.sample(4).raw, b.sample(4).raw)


def test_sampling_draws_distinct_held_rows():
    memory = Memory(10, CPU, seed=0)
    memory.add(rows(0, 6))
    drawn = memory.sample(4).raw.flatten().tolist()
    assert len(set(drawn)) == 4 and set(drawn) <= set(range(6))
    assert sorted(memory.sample(32).raw.flatten().tolist()) == list(range(6))  # fewer held than asked: all
