"""BrickCollection behaviour: ordering, nesting, names, mutation and every bad-input error."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import nn

from brickzoo import (
    BrickCollection,
    BrickDefinitionError,
    BrickGraphError,
    BrickLoss,
    BrickMetricSingle,
    BrickModule,
    BrickNotTrainable,
    BrickOutputError,
    BrickRuntimeError,
    BrickTrainable,
    MissingInputsError,
    Stage,
)
from brickzoo.errors import BrickInputError, BrickzooError


def add(value: float):
    def fn(x: torch.Tensor) -> torch.Tensor:
        return x + value

    return fn


def test_runs_in_dependency_order_not_insertion_order() -> None:
    collection = BrickCollection(
        {
            "third": BrickTrainable(add(100), ["b"], ["c"]),
            "second": BrickTrainable(add(10), ["a"], ["b"]),
            "first": BrickTrainable(add(1), ["x"], ["a"]),
        }
    )
    out = collection({"x": torch.zeros(1)})
    assert out["c"].item() == 111
    assert collection.execution_order() == ["first", "second", "third"]


def test_independent_bricks_keep_insertion_order() -> None:
    collection = BrickCollection({k: BrickTrainable(add(1), ["x"], [f"y_{k}"]) for k in ["c", "a", "b"]})
    assert collection.execution_order() == ["c", "a", "b"]


def test_relative_names_resolve_against_the_holding_collection() -> None:
    collection = BrickCollection(
        {
            "stem": BrickTrainable(add(1), ["x"], ["features"]),
            "heads": {
                "head0": {
                    "a": BrickTrainable(add(1), ["features"], ["./y"]),
                    "b": BrickTrainable(add(1), ["./y"], ["../z"]),
                },
                "c": BrickTrainable(add(1), ["./z"], ["./w"]),
            },
        }
    )
    out = collection({"x": torch.zeros(1)})
    assert out["heads/head0/y"].item() == 2
    assert out["heads/z"].item() == 3
    assert out["heads/w"].item() == 4


def test_relative_name_above_root_fails_clearly() -> None:
    with pytest.raises(BrickGraphError, match=r"brick 'head/a'.*'\.\./\.\./y'.*climbs above the root"):
        BrickCollection({"head": {"a": BrickTrainable(add(1), ["x"], ["../../y"])}})


def test_cycle_is_refused_and_named() -> None:
    with pytest.raises(BrickGraphError, match="cycle") as info:
        BrickCollection(
            {
                "a": BrickTrainable(add(1), ["c"], ["a_out"]),
                "b": BrickTrainable(add(1), ["a_out"], ["b_out"]),
                "c": BrickTrainable(add(1), ["b_out"], ["c"]),
            }
        )
    message = str(info.value)
    for path in ("'a'", "'b'", "'c'"):
        assert path in message
    assert "a_out" in message and "b_out" in message


def test_two_writers_of_one_name_are_refused() -> None:
    with pytest.raises(BrickGraphError, match=r"bricks 'one' and 'two' both write 'y'"):
        BrickCollection(
            {
                "one": BrickTrainable(add(1), ["x"], ["y"]),
                "two": BrickLoss(add(1), ["x"], ["y"]),
            }
        )


def test_reading_own_output_is_refused() -> None:
    with pytest.raises(BrickGraphError, match=r"brick 'inplace'.*reads and writes \['x'\]"):
        BrickCollection({"inplace": BrickTrainable(add(1), ["x"], ["x"])})


def test_missing_inputs_name_brick_missing_available_and_close_matches() -> None:
    collection = BrickCollection(
        {
            "head": {"loss": BrickLoss(nn.MSELoss(), ["./pred", "targets"], ["./loss"])},
            "model": BrickTrainable(add(1), ["images"], ["head/pred"]),
        }
    )
    with pytest.raises(MissingInputsError) as info:
        collection({"images": torch.zeros(1), "target": torch.zeros(1)})
    message = str(info.value)
    assert "missing inputs ['targets']" in message
    assert "brick 'head/loss' needs ['targets']" in message
    assert "got ['images', 'target']" in message
    assert "did you mean ['target']" in message
    assert isinstance(info.value, KeyError)


def test_missing_input_written_by_unselected_group_is_explained() -> None:
    collection = BrickCollection(
        {
            "loss": BrickLoss(add(1), ["x"], ["loss"]),
            "watch": BrickTrainable(add(1), ["loss"], ["watched"], group="METRIC"),
        }
    )
    with pytest.raises(MissingInputsError, match=r"'loss' is written by brick 'loss' \(groups \['LOSS'\]\)"):
        collection({"x": torch.zeros(1)}, groups={"METRIC"})


def test_wrong_number_of_outputs_names_brick_and_names() -> None:
    collection = BrickCollection({"head": {"split": BrickTrainable(lambda x: (x, x, x), ["x"], ["./a", "./b"])}})
    with pytest.raises(
        BrickOutputError,
        match=re.escape(
            "brick 'head/split': returned tuple of length 3, but output_names ['./a', './b'] expect 2 values"
        ),
    ):
        collection({"x": torch.zeros(1)})


def test_single_value_for_several_outputs_is_an_error() -> None:
    collection = BrickCollection({"split": BrickTrainable(add(1), ["x"], ["a", "b"])})
    with pytest.raises(BrickOutputError, match="returned a single Tensor"):
        collection({"x": torch.zeros(1)})


def test_exception_inside_a_brick_is_wrapped_with_path_names_and_shapes() -> None:
    collection = BrickCollection({"backbone": {"conv": BrickTrainable(nn.Conv2d(3, 4, 1), ["images"], ["./features"])}})
    with pytest.raises(BrickRuntimeError) as info:
        collection({"images": torch.zeros(2, 5, 8, 8)})
    message = str(info.value)
    assert "brick 'backbone/conv' (BrickTrainable of Conv2d" in message
    assert "input_names=['images']" in message and "output_names=['backbone/features']" in message
    assert "images=Tensor[2, 5, 8, 8] float32" in message
    assert isinstance(info.value.__cause__, RuntimeError)


def test_dict_inputs_are_keyword_arguments_and_dict_outputs_are_mapped() -> None:
    def fn(numerator: torch.Tensor, denominator: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"ratio": numerator / denominator, "sum": numerator + denominator, "extra": numerator}

    collection = BrickCollection(
        {
            "by_keyword": BrickTrainable(fn, {"denominator": "b", "numerator": "a"}, {"ratio": "r", "sum": "s"}),
            "by_list": BrickTrainable(fn, {"denominator": "b", "numerator": "a"}, ["./ratio", "sum2"]),
        }
    )
    with pytest.raises(BrickOutputError, match=r"brick 'by_list'.*missing \['sum2'\]"):
        collection({"a": torch.tensor(6.0), "b": torch.tensor(3.0)})
    ok = BrickCollection({"b": BrickTrainable(fn, {"denominator": "b", "numerator": "a"}, {"ratio": "r", "sum": "s"})})
    out = ok({"a": torch.tensor(6.0), "b": torch.tensor(3.0)})
    assert out["r"].item() == 2 and out["s"].item() == 9 and "extra" not in out


def test_groups_select_bricks_and_stage_presets() -> None:
    collection = BrickCollection(
        {
            "model": BrickTrainable(add(1), ["x"], ["y"]),
            "loss": BrickLoss(nn.L1Loss(), ["y", "t"], ["loss"]),
            "vis": BrickTrainable(add(1), ["y"], ["picture"], group="VISUALIZATION"),
            "both": BrickTrainable(add(2), ["y"], ["z"], group={"MODEL", "VISUALIZATION"}),
        }
    )
    data = {"x": torch.zeros(1), "t": torch.zeros(1)}
    assert set(collection(data, groups="MODEL", return_inputs=False)) == {"y", "z"}
    assert set(collection(data, groups=Stage.TRAIN, return_inputs=False)) == {"y", "z", "loss"}
    assert collection(data, groups=Stage.TRAIN)["stage"] is Stage.TRAIN
    with pytest.raises(MissingInputsError, match="'y' is written by brick 'model'"):
        collection(data, groups={"VISUALIZATION"})  # y comes from an unselected MODEL brick
    assert collection.required_inputs("VISUALIZATION") == ["y"]
    assert set(collection(data, return_inputs=False)) == {"y", "z", "loss", "picture"}
    assert collection.produced_outputs(Stage.INFERENCE) == ["y", "z"]
    assert collection.required_inputs(Stage.TRAIN) == ["t", "x"]


def test_empty_group_or_bad_group_type_is_refused() -> None:
    with pytest.raises(BrickDefinitionError, match="group must be"):
        BrickTrainable(add(1), ["x"], ["y"], group=set())
    with pytest.raises(BrickDefinitionError, match="got int 3"):
        BrickTrainable(add(1), ["x"], ["y"], group=3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("input_names", "output_names", "match"),
    [
        ("x", ["y"], "got the string 'x'; use \\['x'\\]"),
        (["x"], ["y", "y"], "duplicates"),
        (["x", ""], ["y"], "non-empty string"),
        (["x"], ["__all__"], "only be an input name"),
        (["x"], 5, "must be a list"),
    ],
)
def test_bad_names_are_refused(input_names, output_names, match) -> None:
    with pytest.raises(BrickDefinitionError, match=match):
        BrickTrainable(add(1), input_names, output_names)


def test_bad_entries_are_refused() -> None:
    with pytest.raises(BrickDefinitionError, match="entry 'conv' must be a brick.*got Conv2d"):
        BrickCollection({"conv": nn.Conv2d(1, 1, 1)})
    with pytest.raises(BrickDefinitionError, match="without '/'"):
        BrickCollection({"a/b": BrickTrainable(add(1), ["x"], ["y"])})
    with pytest.raises(
        BrickDefinitionError, match="brick name 'train' clashes with the attribute BrickCollection.train"
    ):
        BrickCollection({"train": BrickTrainable(add(1), ["x"], ["y"])})
    with pytest.raises(BrickDefinitionError, match="nn.Module or a callable"):
        BrickModule(3, ["x"], ["y"])  # type: ignore[arg-type]


def test_dict_mutation_is_revalidated_and_invalidates_plans() -> None:
    collection = BrickCollection({"a": BrickTrainable(add(1), ["x"], ["y"])})
    assert collection({"x": torch.zeros(1)})["y"].item() == 1
    collection["b"] = BrickTrainable(add(10), ["y"], ["z"])
    assert collection({"x": torch.zeros(1)})["z"].item() == 11
    with pytest.raises(BrickGraphError, match="both write 'z'"):
        collection["c"] = BrickTrainable(add(1), ["x"], ["z"])
    assert "c" not in collection  # a refused change leaves the collection as it was
    popped = collection.pop("b")
    assert isinstance(popped, BrickTrainable)
    assert "z" not in collection({"x": torch.zeros(1)})
    collection.update({"head": {"h": BrickTrainable(add(5), ["y"], ["./out"])}})
    assert collection({"x": torch.zeros(1)})["head/out"].item() == 6
    # nested mutation invalidates the root's cached plans and is validated from the root
    collection["head"]["g"] = BrickTrainable(add(1), ["./out"], ["../top"])
    assert collection({"x": torch.zeros(1)})["top"].item() == 7
    with pytest.raises(BrickGraphError, match="both write 'y'"):
        collection["head"]["dup"] = BrickTrainable(add(1), ["x"], ["../y"])
    del collection["head"]
    assert list(collection.keys()) == ["a"]
    collection.clear()
    assert collection({"x": torch.zeros(1)}) == {"x": torch.zeros(1)}


def test_return_inputs_false_and_input_dict_untouched() -> None:
    collection = BrickCollection({"a": BrickTrainable(add(1), ["x"], ["y"])})
    inputs = {"x": torch.zeros(1), "unused": 3}
    out = collection(inputs, return_inputs=False)
    assert list(out) == ["y"]
    assert list(inputs) == ["x", "unused"]


def test_deepcopy_state_dict_and_to() -> None:
    torch.manual_seed(0)
    collection = BrickCollection(
        {
            "a": BrickTrainable(nn.Linear(3, 3), ["x"], ["y"]),
            "h": {"b": BrickTrainable(nn.Linear(3, 2), ["y"], ["./z"])},
        }
    )
    x = torch.randn(2, 3)
    expected = collection({"x": x})["h/z"]
    clone = copy.deepcopy(collection)
    with torch.no_grad():
        clone["h"]["b"].model.weight.add_(1.0)
    # the copy has its own modules and its own plans
    torch.testing.assert_close(collection({"x": x})["h/z"], expected)
    assert not torch.allclose(clone({"x": x})["h/z"], expected)
    fresh = BrickCollection(
        {
            "a": BrickTrainable(nn.Linear(3, 3), ["x"], ["y"]),
            "h": {"b": BrickTrainable(nn.Linear(3, 2), ["y"], ["./z"])},
        }
    )
    fresh.load_state_dict(collection.state_dict())
    torch.testing.assert_close(fresh({"x": x})["h/z"], expected)
    collection.to(torch.float64)
    assert collection({"x": x.double()})["h/z"].dtype == torch.float64
    # a nested copy can be mutated; the copy's root is told
    clone["h"]["c"] = BrickTrainable(add(1), ["./z"], ["./w"])
    assert "h/w" in clone({"x": x})


def test_not_trainable_is_frozen_and_stays_in_eval_mode() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Dropout(0.5))
    collection = BrickCollection(
        {
            "frozen": BrickNotTrainable(net, ["x"], ["y"]),
            "head": BrickTrainable(nn.Conv2d(4, 1, 1), ["y"], ["z"]),
        }
    )
    collection.train()
    assert collection["head"].training
    assert not any(m.training for m in net.modules())
    assert all(not p.requires_grad for p in net.parameters())
    stats = net[1].running_mean.clone()
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    out = collection({"x": x})
    torch.testing.assert_close(net[1].running_mean, stats)  # eval-mode batch norm: statistics unchanged
    out["z"].sum().backward()
    assert x.grad is not None  # gradients flow through a frozen brick by default


def test_calculate_gradients_false_runs_under_no_grad() -> None:
    collection = BrickCollection(
        {"frozen": BrickNotTrainable(nn.Linear(2, 2), ["x"], ["y"], calculate_gradients=False)}
    )
    x = torch.randn(1, 2, requires_grad=True)
    assert not collection({"x": x})["y"].requires_grad


def test_callable_model_and_all_names() -> None:
    collection = BrickCollection(
        {
            "times_two": BrickTrainable(lambda x: 2 * x, ["x"], ["y"]),
            "names": BrickNotTrainable(lambda named: sorted(named), ["__all__"], ["seen"]),
        }
    )
    assert collection({"x": torch.ones(1)})["seen"] == ["x", "y"]


def test_errors_share_one_base_class() -> None:
    import brickzoo.errors as errors

    for name in errors.__all__:
        kind = getattr(errors, name)
        if issubclass(kind, Warning):  # warnings that count what was changed are UserWarnings
            assert issubclass(kind, UserWarning), name
        else:
            assert issubclass(kind, BrickzooError), name


# -- plans follow the bricks' current state ----------------------------------------------------------
def test_module_replaced_after_a_forward_runs_the_new_module() -> None:
    torch.manual_seed(0)
    collection = BrickCollection({"a": BrickTrainable(nn.Linear(2, 3), ["x"], ["y"])})
    x = torch.randn(4, 2)
    assert collection({"x": x})["y"].shape == (4, 3)
    new = nn.Linear(2, 5)
    collection["a"].model = new
    out = collection({"x": x})["y"]
    assert out.shape == (4, 5)
    torch.testing.assert_close(out, new(x))
    # an optimizer built now trains what runs: the gradient reaches the new module
    optimizer = torch.optim.SGD(collection.parameters(), lr=0.1)
    collection({"x": x})["y"].sum().backward()
    assert new.weight.grad is not None
    optimizer.step()


def test_calculate_gradients_changed_after_a_forward_is_honoured() -> None:
    brick = BrickTrainable(nn.Linear(2, 2), ["x"], ["y"])
    collection = BrickCollection({"a": brick})
    x = torch.randn(3, 2)
    assert collection({"x": x})["y"].requires_grad
    brick.calculate_gradients = False
    assert not collection({"x": x})["y"].requires_grad
    brick.calculate_gradients = True
    assert collection({"x": x})["y"].requires_grad


def test_nested_brick_change_invalidates_every_collection_above_it() -> None:
    inner = BrickCollection({"a": BrickTrainable(add(1), ["x"], ["./y"])})
    outer = BrickCollection({"head": inner})
    assert outer({"x": torch.zeros(1)})["head/y"].item() == 1
    outer["head"]["a"].model = add(5)
    assert outer({"x": torch.zeros(1)})["head/y"].item() == 5


def test_building_or_changing_an_unrelated_collection_keeps_cached_plans() -> None:
    first = BrickCollection({"a": BrickTrainable(add(1), ["x"], ["y"]), "b": BrickTrainable(add(2), ["y"], ["z"])})
    first({"x": torch.zeros(1)})
    first({"x": torch.zeros(1)}, groups="MODEL")
    plans = dict(first._plans)
    graph = first._graph
    assert len(plans) == 2
    other = BrickCollection({"c": BrickTrainable(add(1), ["x"], ["y"])})
    other["d"] = BrickTrainable(add(1), ["y"], ["w"])
    other["c"].model = add(3)
    del other["d"]
    other({"x": torch.zeros(1)})
    assert first._graph is graph
    assert first._plans == plans and all(first._plans[k] is v for k, v in plans.items())


def test_a_copy_has_its_own_plans() -> None:
    original = BrickCollection({"a": BrickTrainable(add(1), ["x"], ["y"])})
    original({"x": torch.zeros(1)})
    duplicate = copy.deepcopy(original)
    duplicate["a"].model = add(7)
    assert duplicate({"x": torch.zeros(1)})["y"].item() == 7
    assert original({"x": torch.zeros(1)})["y"].item() == 1


# -- groups as any iterable ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "groups", [["MODEL"], ("MODEL",), {"MODEL"}, frozenset({"MODEL"}), "MODEL", iter(["MODEL"]), ["MODEL", "LOSS"]]
)
def test_groups_may_be_any_iterable_of_names(groups) -> None:
    collection = BrickCollection(
        {"model": BrickTrainable(add(1), ["x"], ["y"]), "vis": BrickTrainable(add(1), ["y"], ["v"], group="VIS")}
    )
    assert set(collection({"x": torch.zeros(1)}, groups=groups, return_inputs=False)) == {"y"}
    assert collection.required_inputs(["MODEL"]) == ["x"]
    assert collection.execution_order(("MODEL", "VIS")) == ["model", "vis"]


def test_bad_or_unknown_group_selection_is_refused() -> None:
    collection = BrickCollection({"model": BrickTrainable(add(1), ["x"], ["y"])})
    with pytest.raises(BrickDefinitionError, match=r"groups must hold non-empty strings .*got \[3\]"):
        collection({"x": torch.zeros(1)}, groups=["MODEL", 3])
    with pytest.raises(BrickDefinitionError, match=r"groups must be a group name.*got int 3"):
        collection({"x": torch.zeros(1)}, groups=3)  # type: ignore[arg-type]
    with pytest.raises(BrickDefinitionError, match=r"groups \['MODLE'\] select no brick.*did you mean \['MODEL'\]"):
        collection({"x": torch.zeros(1)}, groups=["MODLE"])
    # a stage's preset may name groups the collection lacks (no LOSS here): it runs what there is
    assert set(collection({"x": torch.zeros(1)}, groups=Stage.TRAIN, return_inputs=False)) == {"y"}


# -- value checks at data entry: check_batch and check_inputs_present --------------------------------
class CheckedLoss(nn.Module):
    """A loss whose value check lives in check_inputs, as the zoo's losses do."""

    def __init__(self) -> None:
        super().__init__()
        self.checked = 0

    def forward(self, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (y - t.float()).abs().mean()

    def check_inputs(self, y: torch.Tensor, t: torch.Tensor) -> None:
        self.checked += 1
        if int(t.min()) < 0:
            raise BrickInputError(f"targets: expected values >= 0, got {int(t.min())}")


def test_check_batch_runs_value_checks_that_forward_skips() -> None:
    from torchmetrics.classification import MulticlassAccuracy

    loss = CheckedLoss()
    collection = BrickCollection(
        {
            "model": BrickTrainable(add(1), ["x"], ["y"]),
            "head": {"loss": BrickLoss(loss, ["../y", "t"], ["./loss"])},
            "metric": BrickMetricSingle(MulticlassAccuracy(3), ["p", "t"]),
        }
    )
    good = {"x": torch.zeros(2), "t": torch.tensor([1, 2]), "p": torch.tensor([1, 0])}
    bad = {**good, "t": torch.tensor([1, -4])}
    out = collection.check_batch(good, stage=Stage.TRAIN)
    assert loss.checked == 1 and "head/loss" in out
    collection(bad, groups=["MODEL", "LOSS"])  # forward reads no values on the host: no check, no sync
    assert loss.checked == 1
    with pytest.raises(BrickInputError, match=r"^brick 'head/loss': targets: expected values >= 0, got -4"):
        collection.check_batch(bad, groups=Stage.TRAIN)
    with pytest.raises(MissingInputsError, match=r"brick 'head/loss' needs \['t'\]"):
        collection.check_batch({"x": torch.zeros(2)}, groups=["MODEL", "LOSS"])


def test_check_batch_calls_metric_checks() -> None:
    from torchmetrics.classification import MulticlassAccuracy

    class CheckedAccuracy(MulticlassAccuracy):
        def check_inputs(self, preds: torch.Tensor, target: torch.Tensor) -> None:
            if int(target.max()) >= 3:
                raise BrickInputError(f"target: expected class indices < 3, got {int(target.max())}")

    collection = BrickCollection({"metric": BrickMetricSingle(CheckedAccuracy(num_classes=3), ["p", "t"])})
    with pytest.raises(BrickInputError, match=r"brick 'metric': target: expected class indices < 3, got 7"):
        collection.check_batch({"p": torch.tensor([0]), "t": torch.tensor([7])})


def test_check_inputs_present_gives_the_one_diagnostic_without_running() -> None:
    ran = []
    collection = BrickCollection(
        {
            "model": BrickTrainable(lambda x: ran.append(1) or x, ["images"], ["y"]),
            "loss": BrickLoss(nn.L1Loss(), ["y", "labels"], ["loss"]),
        }
    )
    with pytest.raises(MissingInputsError) as info:
        collection.check_inputs_present({"images": torch.zeros(1), "label": 1}, Stage.TRAIN, source="train_loader")
    message = str(info.value)
    assert message.startswith("train_loader: missing inputs ['labels']")
    assert "brick 'loss' needs ['labels']" in message and "did you mean ['label']" in message
    assert ran == []
    collection.check_inputs_present({"images": 0, "labels": 0}, Stage.TRAIN)  # complete: no error


def test_stage_may_be_given_by_name() -> None:
    collection = BrickCollection(
        {"model": BrickTrainable(add(1), ["x"], ["y"]), "loss": BrickLoss(nn.L1Loss(), ["y", "t"], ["loss"])}
    )
    data = {"x": torch.zeros(1), "t": torch.zeros(1)}
    assert set(collection(data, stage="INFERENCE", return_inputs=False)) == {"y"}
    assert collection(data, stage="TRAIN")["stage"] is Stage.TRAIN
    with pytest.raises(BrickDefinitionError, match=r"stage must be a Stage or one of \['TRAIN'.*got str 'TRIAN'"):
        collection(data, stage="TRIAN")
