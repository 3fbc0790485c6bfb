"""Brick groups and the stage presets built from them."""

from __future__ import annotations

import enum
from collections.abc import Iterable

MODEL = "MODEL"
LOSS = "LOSS"
METRIC = "METRIC"
VISUALIZATION = "VISUALIZATION"


class Stage(str, enum.Enum):
    """A model stage. Each stage is a preset selection of brick groups.

    Passing ``stage=`` to :meth:`BrickCollection.forward` selects the stage's groups (unless
    ``groups`` is given too) and makes the stage available to bricks that list ``"stage"``
    among their ``input_names``.
    """

    TRAIN = "TRAIN"
    VALIDATION = "VALIDATION"
    TEST = "TEST"
    INFERENCE = "INFERENCE"
    EXPORT = "EXPORT"

    @property
    def groups(self) -> frozenset[str]:
        """The groups that run in this stage."""
        return _STAGE_GROUPS[self]

    def __str__(self) -> str:
        return self.value


_STAGE_GROUPS: dict[Stage, frozenset[str]] = {
    Stage.TRAIN: frozenset({MODEL, LOSS, METRIC}),
    Stage.VALIDATION: frozenset({MODEL, LOSS, METRIC}),
    Stage.TEST: frozenset({MODEL, LOSS, METRIC}),
    Stage.INFERENCE: frozenset({MODEL}),
    Stage.EXPORT: frozenset({MODEL}),
}


def normalize_groups(group: str | Iterable[str], owner: str) -> frozenset[str]:
    """Turn a ``group=`` argument (a string or an iterable of strings) into a frozenset."""
    from brickzoo.errors import BrickDefinitionError

    if isinstance(group, str):
        groups = frozenset({group})
    else:
        try:
            groups = frozenset(group)
        except TypeError:
            raise BrickDefinitionError(
                f"{owner}: group must be a string or a set of strings, got {type(group).__name__} {group!r}"
            ) from None
    bad = sorted(repr(g) for g in groups if not isinstance(g, str) or not g)
    if bad or not groups:
        raise BrickDefinitionError(
            f"{owner}: group must be a non-empty string or set of non-empty strings, got {group!r}"
        )
    return groups


def normalize_selection(groups: Iterable[str]) -> frozenset[str]:
    """A group selection given as any iterable of names (list, tuple, set...) as a frozenset.

    Raises:
        BrickDefinitionError: the iterable holds something other than non-empty strings.
    """
    from brickzoo.errors import BrickDefinitionError

    try:
        selection = frozenset(groups)
    except TypeError:
        raise BrickDefinitionError(
            f"groups must be a group name, an iterable of group names or a Stage, got {type(groups).__name__} "
            f"{groups!r}"
        ) from None
    bad = [g for g in selection if not isinstance(g, str) or not g]
    if bad:
        raise BrickDefinitionError(f"groups must hold non-empty strings (group names), got {bad!r} in {groups!r}")
    return selection
