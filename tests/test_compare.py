import csv
import io

import pytest

from lifelong import compare
from lifelong.cli import main
from lifelong.errors import UserError


def experiment(tiny, **extra):
    return compare.experiment_from_dict({
        "base": tiny(train={"epochs": 1}),
        "variants": [{"name": "naive", "set": {"method": "naive"}}, {"name": "joint", "set": {"method": "joint"}}],
        "seeds": [0, 1],
        **extra,
    })


def test_plan_covers_variants_seeds_and_references(tiny):
    runs = compare.plan(experiment(tiny, references=True))
    assert [(r["variant"], r["seed"]) for r in runs] == [
        ("naive", 0), ("naive", 1), ("joint", 0), ("joint", 1), ("single-task", 0), ("single-task", 1)]
    assert runs[2]["config"]["method"] == "joint" and runs[2]["config"]["data"]["max_tasks"] == 3


def test_order_sweep_moves_one_task_through_the_positions(tiny):
    runs = compare.plan(experiment(tiny, seeds=[0], order_sweep={"task": [2, 3]}))
    orders = [r["config"]["data"]["class_order"] for r in runs if r["variant"] == "naive"]
    assert orders == [
        [[2, 3], [0, 1], [4, 5], [6, 7], [8, 9]],
        [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]],
        [[0, 1], [4, 5], [2, 3], [6, 7], [8, 9]],
    ]  # max_tasks 3 keeps positions 1..3


def test_summary_is_mean_and_std_of_the_runs(tiny):
    exp = experiment(tiny, references=True)
    entries = compare.run_experiment(exp)
    rows = {r["variant"]: r for r in compare.summarize(entries)}
    naive = [e["results"] for e in entries if e["variant"] == "naive"]
    mean = (naive[0]["acc"] + naive[1]["acc"]) / 2
    assert rows["naive"]["acc"][0] == pytest.approx(mean)
    assert rows["naive"]["acc"][1] == pytest.approx(abs(naive[0]["acc"] - naive[1]["acc"]) / 2 ** 0.5)
    ref = [e for e in entries if e["variant"] == "single-task" and e["seed"] == 0][0]["results"]["acc_matrix"]
    R = naive[0]["acc_matrix"]
    by_hand = [ref[j][j] - R[-1][j] for j in range(3)]
    assert rows["single-task"]["avg_forgetting_ref"][0] == pytest.approx(0.0)
    assert max(by_hand) <= rows["naive"]["max_forgetting_ref"][0] + rows["naive"]["max_forgetting_ref"][1] * 2 ** 0.5
    parsed = list(csv.DictReader(io.StringIO(compare.to_csv(list(rows.values())))))
    assert float(parsed[0]["acc_mean"]) == pytest.approx(mean)
    assert "± " not in compare.to_markdown(list(rows.values())) and "naive" in compare.to_markdown(list(rows.values()))


def test_a_single_task_variant_is_the_reference_or_is_refused(tiny):
    """--methods naive,single-task --references runs single-task once; a different variant under that name would
    be averaged with the references, so it is refused."""
    exp = compare.experiment_from_dict({"base": tiny(), "variants": [{"name": "single-task",
                                                                      "set": {"method": "single-task"}}],
                                        "seeds": [0], "references": True})
    assert [r["variant"] for r in compare.plan(exp)] == ["single-task"]
    exp = compare.experiment_from_dict({"base": tiny(), "variants": [{"name": "single-task", "set": {"method": "lwf"}}],
                                        "seeds": [0], "references": True})
    with pytest.raises(UserError, match="clashes with the single-task references"):
        compare.plan(exp)


def test_bad_experiments_are_user_errors(tiny):
    with pytest.raises(UserError, match="variants"):
        compare.experiment_from_dict({"variants": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(UserError, match="is not one task"):
        compare.plan(experiment(tiny, order_sweep={"task": [1, 2]}))


@pytest.mark.parametrize("extra, message", [
    ({"seeds": [0, 0]}, r"'seeds': seed 0 is given twice in \[0, 0\], which would count one run twice; give each"),
    ({"seeds": []}, "'seeds': give at least one seed"),
    ({"variants": []}, "'variants': give at least one variant"),
    ({"variants": [{"name": "a", "set": {"seed": 3}}]}, "a variant cannot set 'seed': list the seeds under"),
    ({"order_sweep": {"task": [2, 3], "positions": [1, 1, 2]}}, "position 1 is given twice"),
])
def test_seeds_and_variants_must_be_given_and_distinct(tiny, extra, message):
    with pytest.raises(UserError, match=message):
        experiment(tiny, **extra)



@pytest.mark.parametrize("flag, value", [("--seeds", ""), ("--seeds", ","), ("--order-sweep", " ")])
def test_cli_refuses_an_empty_integer_list(flag, value, tmp_path, capsys):
    """An empty --seeds or --order-sweep is an error naming the flag, not silently the default."""
    assert main(["compare", "--methods", "naive", flag, value, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{flag} expects comma-separated integers" in err and len(err.splitlines()) == 1
    assert not list(tmp_path.glob("compare-*"))

def test_cli_refuses_a_seed_given_twice(tmp_path, capsys):
    (tmp_path / "exp.yml").write_text("variants: [{name: a, set: {method: naive}}]\nseeds: [1, 2, 1]\n")
    for args in (["--methods", "naive", "--seeds", "0,0"], ["--config", str(tmp_path / "exp.yml")]):
        assert main(["compare", *args, "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip()
        assert "is given twice" in err and len(err.splitlines()) == 1
    assert not list(tmp_path.glob("compare-*"))


def test_cli_compare_writes_tables(tmp_path, capsys):
    code = main(["compare", "--methods", "naive,single-task", "--seeds", "0", "--out", str(tmp_path),
                 "--set", "data.max_tasks=2", "--set", "data.train_fraction=0.2", "--set", "train.epochs=1",
                 "--set", "model.hidden=[16]"])
    assert code == 0
    assert len(list(tmp_path.glob("compare-*/summary.md"))) == 1 and len(list(tmp_path.glob("compare-*/summary.csv")))
    assert main(["compare", "--seeds", "0", "--out", str(tmp_path)]) == 2
    assert "needs --methods" in capsys.readouterr().err


def test_order_sweep_gives_the_moved_tasks_final_accuracy_by_position():
    def result(order, final):
        return {"tasks": order, "acc_matrix": [[0.0] * len(order), final]}

    runs = [result([[2, 3], [0, 1]], [0.9, 0.5]), result([[0, 1], [3, 2]], [0.4, 0.6]),
            result([[0, 1], [2, 3]], [0.3, 0.8])]  # the moved task [2, 3] is found in any class order
    positions, means, stds = compare.moved_task_accuracy(runs, [2, 3])
    assert positions == [1, 2] and means == pytest.approx([0.9, 0.7]) and stds == pytest.approx([0.0, 0.2 / 2**0.5])
    entries = [{"variant": v, "results": r} for v, r in zip(("a", "a", "b"), runs)]
    assert compare.order_sweep_table(entries, [2, 3]) == [
        {"variant": "a", "final_acc_by_position": {1: 0.9, 2: 0.6}, "spread": pytest.approx(0.3)},
        {"variant": "b", "final_acc_by_position": {2: 0.8}, "spread": 0.0}]


def test_reference_forgetting_covers_every_run_of_a_row_or_none():
    """Before, a row of two runs whose seed-1 run had no single-task reference showed seed 0's figure as the row's;
    and a class-incremental run took its reference from a task-incremental single-task run."""
    def entry(variant, seed, method, scenario="task", matrix=((0.9, 0.1), (0.6, 0.8))):
        results = {"method": method, "tasks": [[0, 1], [2, 3]], "scenario": scenario,
                   "acc_matrix": [list(r) for r in matrix], "acc": 0.7, "bwt": -0.3, "fwt": 0.0, "avg_forgetting": 0.3, "max_forgetting": 0.3,
                   "train_seconds": 1.0}
        return {"variant": variant, "seed": seed, "results": results}

    reference = entry("single-task", 0, "single-task", matrix=((0.95, 0.1), (0.95, 0.9)))
    partial = {r["variant"]: r for r in compare.summarize([entry("naive", 0, "naive"), entry("naive", 1, "naive"),
                                                            reference])}
    assert partial["naive"]["runs"] == 2 and partial["naive"]["avg_forgetting_ref"] is None
    full = {r["variant"]: r for r in compare.summarize([entry("naive", 0, "naive"), reference])}
    assert full["naive"]["avg_forgetting_ref"][0] == pytest.approx(((0.95 - 0.6) + (0.9 - 0.8)) / 2)  # a_t − R[T][t]
    other = {r["variant"]: r for r in compare.summarize([entry("naive", 0, "naive", scenario="class"), reference])}
    assert other["naive"]["avg_forgetting_ref"] is None
