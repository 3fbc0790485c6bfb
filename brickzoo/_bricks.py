"""Bricks: a module (or callable) plus the names of the tensors it reads and writes and its groups.

A brick is never called per batch through ``nn.Module.__call__`` by a collection. Instead each
brick compiles a small *step* function, ``step(named) -> None``, that reads its inputs from the
dict of named tensors, calls the wrapped module and writes its outputs. The collection builds the
steps once per group selection and then runs them in dependency order; that keeps the dispatch
cost per brick to a dict read, a call and a dict write.
"""

from __future__ import annotations

import abc
import inspect
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from brickzoo._groups import LOSS, METRIC, MODEL, VISUALIZATION, normalize_groups
from brickzoo._names import ALL_NAMES, basename, check_names, resolve_name
from brickzoo.errors import BrickDefinitionError, BrickOutputError

if TYPE_CHECKING:
    from brickzoo._collection import BrickCollection

Step = Callable[[dict[str, Any]], None]
NamesArg = Sequence[str] | Mapping[str, str]

__all__ = [
    "BrickInterface",
    "BrickLoss",
    "BrickMetricSingle",
    "BrickMetrics",
    "BrickModule",
    "BrickNotTrainable",
    "BrickPerImageVisualization",
    "BrickTrainable",
]


def _describe(obj: object) -> str:
    if isinstance(obj, type):
        return obj.__name__
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        return obj.__name__
    return type(obj).__name__


class BrickInterface(nn.Module, abc.ABC):
    """Base class of all bricks.

    Args:
        input_names: names of the tensors passed to the wrapped module; a list passes them as
            positional arguments, a dict ``{argument: name}`` as keyword arguments. ``"__all__"``
            passes the whole dict of named tensors and ``"stage"`` the current :class:`Stage`.
            Names starting with ``./`` or ``../`` are relative to the collection holding the brick.
        output_names: names given to the module's results, in order; a dict ``{key: name}``
            picks entries from a dict result.
        group: one group name or a set of them; a collection runs a brick when one of its groups
            is selected.

    Collections cache one plan of steps per group selection. Setting an attribute that a step
    reads (listed in :attr:`STEP_ATTRIBUTES`, such as ``model`` or ``calculate_gradients``) clears
    the cached plans of every collection holding the brick, so the next call runs the new state.
    """

    STEP_ATTRIBUTES: frozenset[str] = frozenset({"model", "calculate_gradients"})
    """Attributes read when a step is built; changing one rebuilds the plans of the collections holding the brick."""

    _owners: weakref.WeakSet[BrickCollection]

    def __init__(self, input_names: NamesArg, output_names: NamesArg, group: str | Iterable[str]) -> None:
        super().__init__()
        object.__setattr__(self, "_owners", weakref.WeakSet())
        owner = type(self).__name__
        self._input_names, self._input_keys = check_names(input_names, "input_names", owner)
        self._output_names, self._output_keys = check_names(output_names, "output_names", owner)
        if ALL_NAMES in self._output_names:
            raise BrickDefinitionError(f"{owner}: {ALL_NAMES!r} can only be an input name, got it in output_names")
        if len(set(self._output_names)) != len(self._output_names):
            raise BrickDefinitionError(f"{owner}: output_names contains duplicates: {list(self._output_names)}")
        self._groups = normalize_groups(group, owner)

    # -- read-only description -------------------------------------------------------------
    @property
    def input_names(self) -> list[str] | dict[str, str]:
        if self._input_keys is None:
            return list(self._input_names)
        return dict(zip(self._input_keys, self._input_names, strict=True))

    @property
    def output_names(self) -> list[str] | dict[str, str]:
        if self._output_keys is None:
            return list(self._output_names)
        return dict(zip(self._output_keys, self._output_names, strict=True))

    @property
    def groups(self) -> frozenset[str]:
        return self._groups

    def model_name(self) -> str:
        """A short name of what the brick wraps, used in printing and graphs."""
        return _describe(getattr(self, "model", self))

    # -- cached plans follow the brick's state -------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name in self.STEP_ATTRIBUTES:
            for owner in list(getattr(self, "_owners", ())):
                owner._invalidate_plans()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_owners", None)  # weak references to collections: rebuilt by the collection holding a copy
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        object.__setattr__(self, "_owners", weakref.WeakSet())

    # -- execution ---------------------------------------------------------------------------
    @abc.abstractmethod
    def make_step(self, input_names: tuple[str, ...], output_names: tuple[str, ...], path: str) -> Step:
        """Return ``step(named) -> None`` that runs this brick on the dict ``named`` in place.

        ``input_names``/``output_names`` are this brick's names resolved to absolute names;
        ``path`` is the brick's path, used in error messages.
        """

    def make_check(self, input_names: tuple[str, ...], path: str) -> Step | None:
        """Return ``check(named) -> None`` running the wrapped module's ``check_inputs``, or None.

        A module may define ``check_inputs`` with the arguments of its ``forward`` (or, for
        metrics, of ``update``): the checks that read tensor values on the host (class index
        ranges, finite boxes...) and so stay out of the forward pass.
        :meth:`BrickCollection.check_batch` runs them before each brick.
        """
        return None

    def forward(self, named_inputs: dict[str, Any]) -> dict[str, Any]:
        """Run the brick alone on a dict of named tensors and return its named outputs."""
        from brickzoo.errors import MissingInputsError

        path = type(self).__name__
        inputs = tuple(resolve_name(n, "", path) for n in self._input_names)
        outputs = tuple(resolve_name(n, "", path) for n in self._output_names)
        missing = sorted(n for n in inputs if n not in named_inputs and n != ALL_NAMES)
        if missing:
            raise MissingInputsError(
                f"brick {path}: missing inputs {missing}; got {sorted(named_inputs)}, expected {list(inputs)}"
            )
        named = dict(named_inputs)
        self.make_step(inputs, outputs, path)(named)
        return {name: named[name] for name in outputs if name in named}

    def __repr__(self) -> str:
        groups = "{" + ", ".join(repr(g) for g in sorted(self._groups)) + "}"
        return (
            f"{type(self).__name__}({self.model_name()}, input_names={self.input_names!r}, "
            f"output_names={self.output_names!r}, groups={groups})"
        )


# -- helpers to build steps --------------------------------------------------------------------
def _argument_getter(
    input_names: tuple[str, ...], input_keys: tuple[str, ...] | None
) -> Callable[[dict[str, Any]], tuple[tuple[Any, ...], dict[str, Any]]]:
    """Return ``get(named) -> (args, kwargs)`` for the general (slow) call path."""

    def value(named: dict[str, Any], name: str) -> Any:
        return dict(named) if name == ALL_NAMES else named[name]

    if input_keys is None:
        return lambda named: (tuple(value(named, n) for n in input_names), {})
    pairs = tuple(zip(input_keys, input_names, strict=True))
    return lambda named: ((), {k: value(named, n) for k, n in pairs})


def _check_step(
    check: Callable[..., Any] | None, input_names: tuple[str, ...], input_keys: tuple[str, ...] | None
) -> Step | None:
    """``check(named)`` calling ``check(*args, **kwargs)`` with a brick's inputs, or None without a check."""
    if check is None:
        return None
    get = _argument_getter(input_names, input_keys)

    def run_check(named: dict[str, Any]) -> None:
        args, kwargs = get(named)
        check(*args, **kwargs)

    return run_check


def _output_writer(
    output_names: tuple[str, ...], output_keys: tuple[str, ...] | None, raw_names: tuple[str, ...], path: str
) -> Callable[[dict[str, Any], Any], None]:
    """Return ``write(named, result)`` that maps a module's result onto the output names."""
    n = len(output_names)
    if n == 0:
        return lambda named, result: None
    if output_keys is None and n == 1:
        only = output_names[0]

        def write_one(named: dict[str, Any], result: Any) -> None:
            named[only] = result

        return write_one
    keys = output_keys if output_keys is not None else tuple(basename(r) for r in raw_names)

    def write_many(named: dict[str, Any], result: Any) -> None:
        if isinstance(result, Mapping):
            missing = [k for k in keys if k not in result]
            if missing:
                raise BrickOutputError(
                    f"brick '{path}': returned a dict with keys {sorted(map(str, result))}, but output_names "
                    f"{list(raw_names)} expect the keys {list(keys)}; missing {missing}"
                )
            for key, name in zip(keys, output_names, strict=True):
                named[name] = result[key]
            return
        if output_keys is not None:
            raise BrickOutputError(
                f"brick '{path}': output_names is a dict {dict(zip(output_keys, raw_names, strict=True))}, so the "
                f"module must return a dict; got {type(result).__name__}"
            )
        if not isinstance(result, (tuple, list)) or len(result) != n:
            got = (
                f"{type(result).__name__} of length {len(result)}"
                if isinstance(result, (tuple, list))
                else (f"a single {type(result).__name__}")
            )
            raise BrickOutputError(
                f"brick '{path}': returned {got}, but output_names {list(raw_names)} expect {n} values"
            )
        for name, value in zip(output_names, result, strict=True):
            named[name] = value

    return write_many


def _module_step(
    fn: Callable[..., Any],
    input_names: tuple[str, ...],
    input_keys: tuple[str, ...] | None,
    output_names: tuple[str, ...],
    output_keys: tuple[str, ...] | None,
    raw_output_names: tuple[str, ...],
    path: str,
) -> Step:
    """The step of a brick that calls ``fn`` and writes its results; fast paths for common shapes."""
    plain_inputs = input_keys is None and ALL_NAMES not in input_names
    single_output = output_keys is None and len(output_names) == 1
    if plain_inputs and single_output:
        out = output_names[0]
        if len(input_names) == 1:
            (in0,) = input_names

            def step_1_1(named: dict[str, Any]) -> None:
                named[out] = fn(named[in0])

            return step_1_1
        if len(input_names) == 2:
            in0, in1 = input_names

            def step_2_1(named: dict[str, Any]) -> None:
                named[out] = fn(named[in0], named[in1])

            return step_2_1

        def step_n_1(named: dict[str, Any]) -> None:
            named[out] = fn(*[named[n] for n in input_names])

        return step_n_1

    get = _argument_getter(input_names, input_keys)
    write = _output_writer(output_names, output_keys, raw_output_names, path)

    def step(named: dict[str, Any]) -> None:
        args, kwargs = get(named)
        write(named, fn(*args, **kwargs))

    return step


# -- module bricks -----------------------------------------------------------------------------
class BrickModule(BrickInterface):
    """A brick wrapping an ``nn.Module`` or any callable.

    Args:
        model: the module (or callable) to run.
        input_names: see :class:`BrickInterface`.
        output_names: see :class:`BrickInterface`.
        group: see :class:`BrickInterface`; ``"MODEL"`` by default.
        trainable: if False, the module's parameters are frozen (``requires_grad=False``) and
            the module stays in eval mode (normalisation statistics are not updated) even when
            the collection is switched to ``.train()``.
        calculate_gradients: if False, the module runs under ``torch.no_grad()``, so no
            gradient flows back through it to earlier bricks.

    Example:
        >>> brick = BrickModule(nn.Linear(4, 2), input_names=["x"], output_names=["y"])
        >>> brick({"x": torch.zeros(3, 4)})["y"].shape
        torch.Size([3, 2])
    """

    def __init__(
        self,
        model: nn.Module | Callable[..., Any],
        input_names: NamesArg,
        output_names: NamesArg,
        group: str | Iterable[str] = MODEL,
        trainable: bool = True,
        calculate_gradients: bool = True,
    ) -> None:
        super().__init__(input_names=input_names, output_names=output_names, group=group)
        if not callable(model):
            raise BrickDefinitionError(
                f"{type(self).__name__}: model must be an nn.Module or a callable, got {type(model).__name__}"
            )
        self.model = model
        self.trainable = trainable
        self.calculate_gradients = calculate_gradients
        if not trainable and isinstance(model, nn.Module):
            model.requires_grad_(False)
            model.eval()

    def train(self, mode: bool = True) -> BrickModule:
        super().train(mode)
        if not self.trainable and isinstance(self.model, nn.Module):
            self.model.eval()
        return self

    def make_step(self, input_names: tuple[str, ...], output_names: tuple[str, ...], path: str) -> Step:
        fn: Callable[..., Any] = self.model
        if not self.calculate_gradients:
            fn = torch.no_grad()(fn)
        return _module_step(
            fn, input_names, self._input_keys, output_names, self._output_keys, self._output_names, path
        )

    def make_check(self, input_names: tuple[str, ...], path: str) -> Step | None:
        return _check_step(getattr(self.model, "check_inputs", None), input_names, self._input_keys)


class BrickTrainable(BrickModule):
    """A module brick whose parameters are trained (``group="MODEL"`` by default)."""

    def __init__(
        self,
        model: nn.Module | Callable[..., Any],
        input_names: NamesArg,
        output_names: NamesArg,
        group: str | Iterable[str] = MODEL,
    ) -> None:
        super().__init__(model, input_names, output_names, group=group, trainable=True)


class BrickNotTrainable(BrickModule):
    """A module brick with frozen parameters that always runs in eval mode.

    Gradients still flow *through* it to earlier bricks unless ``calculate_gradients=False``.
    """

    def __init__(
        self,
        model: nn.Module | Callable[..., Any],
        input_names: NamesArg,
        output_names: NamesArg,
        group: str | Iterable[str] = MODEL,
        calculate_gradients: bool = True,
    ) -> None:
        super().__init__(
            model, input_names, output_names, group=group, trainable=False, calculate_gradients=calculate_gradients
        )


class BrickLoss(BrickModule):
    """A brick computing a loss; its outputs are what :meth:`BrickCollection.extract_losses` returns."""

    def __init__(
        self,
        model: nn.Module | Callable[..., Any],
        input_names: NamesArg,
        output_names: NamesArg,
        group: str | Iterable[str] = LOSS,
    ) -> None:
        super().__init__(model, input_names, output_names, group=group, trainable=True)


# -- metric bricks -----------------------------------------------------------------------------
class BrickMetrics(BrickInterface):
    """A brick that accumulates torchmetrics metrics over batches.

    Each run updates the metrics without gradients; :meth:`BrickCollection.summarize` computes
    them over everything seen since the last reset. Results are keyed by the metric names,
    prefixed with the path of the collection that holds the brick (``head0/MulticlassAccuracy``).

    Args:
        metric_collection: a ``torchmetrics.MetricCollection`` (or a single ``Metric``).
        input_names: the tensors passed to ``update`` (e.g. ``["./class_prediction", "targets"]``).
        group: ``"METRIC"`` by default.
        return_metrics: if True, the brick also writes the per-batch metric values under their
            names, at the cost of a ``compute`` per batch.
    """

    def __init__(
        self,
        metric_collection: Any,
        input_names: NamesArg,
        group: str | Iterable[str] = METRIC,
        return_metrics: bool = False,
    ) -> None:
        from torchmetrics import Metric, MetricCollection

        if isinstance(metric_collection, Metric):
            metric_collection = MetricCollection({type(metric_collection).__name__: metric_collection})
        if not isinstance(metric_collection, MetricCollection):
            raise BrickDefinitionError(
                f"{type(self).__name__}: expected a torchmetrics MetricCollection or Metric, "
                f"got {type(metric_collection).__name__}"
            )
        names = [f"./{key}" for key in metric_collection.keys(keep_base=False)] if return_metrics else []
        super().__init__(input_names=input_names, output_names=names, group=group)
        self.metrics = metric_collection
        self.return_metrics = return_metrics

    STEP_ATTRIBUTES = frozenset({"metrics", "return_metrics"})

    def model_name(self) -> str:
        return repr(list(self.metrics.keys(keep_base=False)))

    def make_check(self, input_names: tuple[str, ...], path: str) -> Step | None:
        """Run ``check_inputs`` of the metric collection, or of each of its metrics that has one."""
        own = getattr(self.metrics, "check_inputs", None)
        checks = (
            [own] if own is not None else [c for m in self.metrics.values() if (c := getattr(m, "check_inputs", None))]
        )
        if not checks:
            return None

        def check_all(*args: Any, **kwargs: Any) -> None:
            for check in checks:
                check(*args, **kwargs)

        return _check_step(check_all, input_names, self._input_keys)

    def make_step(self, input_names: tuple[str, ...], output_names: tuple[str, ...], path: str) -> Step:
        metrics = self.metrics
        get = _argument_getter(input_names, self._input_keys)
        if self.return_metrics:
            keys = tuple(self.metrics.keys(keep_base=False))
            pairs = tuple(zip(keys, output_names, strict=True))

            def step_return(named: dict[str, Any]) -> None:
                args, kwargs = get(named)
                with torch.no_grad():
                    values = metrics(*args, **kwargs)
                for key, name in pairs:
                    named[name] = values[key]

            return step_return

        def step(named: dict[str, Any]) -> None:
            args, kwargs = get(named)
            with torch.no_grad():
                metrics.update(*args, **kwargs)

        return step

    def summarize(self, reset: bool = False) -> dict[str, Any]:
        """Compute the metrics accumulated so far, keyed by metric name; optionally reset them."""
        if not any(m.update_called for m in self.metrics.values()):
            values: dict[str, Any] = {}
        else:
            values = dict(self.metrics.compute())
        if reset:
            self.metrics.reset()
        return values

    def reset(self) -> None:
        self.metrics.reset()


class BrickMetricSingle(BrickMetrics):
    """A metric brick holding one ``torchmetrics.Metric``, named ``metric_name`` (its class name by default)."""

    def __init__(
        self,
        metric: Any,
        input_names: NamesArg,
        group: str | Iterable[str] = METRIC,
        return_metrics: bool = False,
        metric_name: str | None = None,
    ) -> None:
        from torchmetrics import Metric, MetricCollection

        if not isinstance(metric, Metric):
            raise BrickDefinitionError(
                f"BrickMetricSingle: expected a torchmetrics Metric, got {type(metric).__name__}"
                + ("; use BrickMetrics for a MetricCollection" if isinstance(metric, MetricCollection) else "")
            )
        name = metric_name or type(metric).__name__
        super().__init__(
            MetricCollection({name: metric}, compute_groups=False),
            input_names=input_names,
            group=group,
            return_metrics=return_metrics,
        )


# -- visualization brick ---------------------------------------------------------------------
Unpack = Callable[[Any], Sequence[Any]]


class BrickPerImageVisualization(BrickInterface):
    """A brick that splits batched inputs into per-image values and draws each image with a callable.

    Each input is unpacked into one value per image:

    - a function given for its name in ``unpack_functions_for_input_name`` splits it; ``None``
      there passes the value un-split to every image;
    - ``"__all__"`` gives every image the whole dict of named values (un-split);
    - otherwise the first matching type of ``unpack_functions_for_type`` splits it (tensors with
      a batch dimension by default: ``[B, C, H, W]`` become channel-last numpy arrays
      ``[H, W, C]``, see :func:`~brickzoo.tensor_conversions.unpack_batched_tensor_to_numpy_channel_last`),
      and lists and tuples hold one entry per image;
    - any other value (a title string, a dict, a 0-d tensor) is passed unchanged to every image.

    Args:
        callable: called once per image with one unpacked value per input name; it returns the
            drawing (usually a ``PIL.Image.Image``), or a tuple of values for several output names.
        input_names: the inputs, see above.
        output_names: each output is a list with one entry per image.
        group: ``"VISUALIZATION"`` by default.
        unpack_functions_for_type: ``{type: fn}`` where ``fn(batched_value) -> list`` splits a batch
            into per-image values; checked before the default for tensors.
        unpack_functions_for_input_name: ``{input_name: fn or None}``, overriding the per-type choice.

    Example:
        >>> brick = BrickPerImageVisualization(lambda image, title: (title, image.shape),
        ...                                    input_names=["images", "title"], output_names=["shapes"])
        >>> brick({"images": torch.zeros(2, 3, 4, 5), "title": "x"})["shapes"]
        [('x', (4, 5, 3)), ('x', (4, 5, 3))]
    """

    STEP_ATTRIBUTES = frozenset({"callable", "unpack_functions_for_type", "unpack_functions_for_input_name"})

    def __init__(
        self,
        callable: Callable[..., Any],  # noqa: A002 - the seed's argument name
        input_names: NamesArg,
        output_names: NamesArg,
        group: str | Iterable[str] = VISUALIZATION,
        unpack_functions_for_type: Mapping[type, Unpack] | None = None,
        unpack_functions_for_input_name: Mapping[str, Unpack | None] | None = None,
    ) -> None:
        from brickzoo.tensor_conversions import unpack_batched_tensor_to_numpy_channel_last

        super().__init__(input_names=input_names, output_names=output_names, group=group)
        if not callable_(callable):
            raise BrickDefinitionError(
                f"BrickPerImageVisualization: callable must be callable, got {type(callable).__name__}"
            )
        types: dict[type, Unpack] = dict(unpack_functions_for_type or {})
        types.setdefault(torch.Tensor, unpack_batched_tensor_to_numpy_channel_last)
        by_name = dict(unpack_functions_for_input_name or {})
        unknown = sorted(set(by_name) - set(self._input_names))
        if unknown:
            raise BrickDefinitionError(
                f"BrickPerImageVisualization: unpack_functions_for_input_name names {unknown}, "
                f"which are not among input_names {list(self._input_names)}"
            )
        not_callable = sorted(name for name, fn in by_name.items() if fn is not None and not callable_(fn))
        if not_callable:
            raise BrickDefinitionError(
                f"BrickPerImageVisualization: unpack_functions_for_input_name must map names to a function or None, "
                f"got {[type(by_name[n]).__name__ for n in not_callable]} for {not_callable}"
            )
        self.callable = callable
        self.unpack_functions_for_type = types
        self.unpack_functions_for_input_name = by_name

    def model_name(self) -> str:
        return getattr(self.callable, "__name__", None) or _describe(self.callable)

    def _unpacker(self, raw_name: str) -> Callable[[Any], Sequence[Any] | None] | None:
        """The function splitting input ``raw_name`` into per-image values (None: pass it whole)."""
        if raw_name in self.unpack_functions_for_input_name:
            return self.unpack_functions_for_input_name[raw_name]
        if raw_name == ALL_NAMES:
            return None
        types = tuple(self.unpack_functions_for_type.items())

        def unpack(value: Any) -> Sequence[Any] | None:
            for kind, fn in types:
                if isinstance(value, kind):
                    if isinstance(value, torch.Tensor) and value.ndim == 0:
                        return None  # no batch dimension: the same value for every image
                    return fn(value)
            if isinstance(value, (list, tuple)):
                return value
            return None

        return unpack

    def make_step(self, input_names: tuple[str, ...], output_names: tuple[str, ...], path: str) -> Step:
        draw = self.callable
        unpackers = tuple(self._unpacker(raw) for raw in self._input_names)
        keys = self._input_keys
        outputs = output_names

        def step(named: dict[str, Any]) -> None:
            with torch.no_grad():
                rows = _per_image_rows(named, input_names, unpackers, path)
                if keys is None:
                    results = [draw(*row) for row in rows]
                else:
                    results = [draw(**dict(zip(keys, row, strict=True))) for row in rows]
            if len(outputs) == 1:
                named[outputs[0]] = results
            elif outputs:
                for i, name in enumerate(outputs):
                    named[name] = [r[i] for r in results]

        return step


def _per_image_rows(
    named: dict[str, Any], input_names: tuple[str, ...], unpackers: tuple[Any, ...], path: str
) -> list[tuple[Any, ...]]:
    """One tuple of inputs per image: split batched values, repeat the others."""
    columns: list[Sequence[Any] | None] = []
    values: list[Any] = []
    for name, unpack in zip(input_names, unpackers, strict=True):
        value = dict(named) if name == ALL_NAMES else named[name]
        values.append(value)
        columns.append(None if unpack is None else unpack(value))
    sizes = {n: len(c) for n, c in zip(input_names, columns, strict=True) if c is not None}
    if not sizes:
        raise BrickOutputError(
            f"brick '{path}': none of the inputs {list(input_names)} holds a batch to split into images "
            "(tensors [B, ...] or lists); pass at least one batched input"
        )
    if len(set(sizes.values())) > 1:
        raise BrickOutputError(f"brick '{path}': inputs hold different numbers of images: {sizes}")
    count = next(iter(sizes.values()))
    return [
        tuple(value if column is None else column[i] for value, column in zip(values, columns, strict=True))
        for i in range(count)
    ]


callable_ = callable
