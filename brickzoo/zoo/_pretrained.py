"""Prebuilt models: list, find (downloading when needed), load, verify and publish zoo entries.

An **entry** is a plain folder of files, so it can be hosted anywhere that serves files (a web
server, a release page, a Hugging Face Hub model repository, a shared drive)::

    shapes_multitask/
      card.json                         the model card (:class:`ModelCard`): heads and class names,
                                        preprocessing, metrics, size and speed, provenance, and the
                                        sha256 and size of every file below
      config.yaml                       the zoo config it was trained from, fully resolved (explicit
                                        num_classes and class_names): ``brickzoo train config.yaml``
      weights/<brick path>.safetensors  one file per brick with weights: the layout of
                                        ``brickzoo.save_bricks(format="safetensors")``
      checksums.sha256                  the same hashes, for ``sha256sum -c checksums.sha256``
      README.md                         the card in tables, with Hugging Face Hub front matter

Per-brick files rather than one: strict loading (``brickzoo.load_bricks``) names the brick
that does not fit, fine-tuning loads what fits brick by brick, and ``--weights <entry>/weights``
works with every command that takes a weight folder.

**Sources**, in this order: an entry shipped inside the package (``brickzoo/zoo/pretrained/
<name>/``, by name or ``zoo:<name>``), a local folder (or its ``card.json``), or an URL of the
folder or of its ``card.json`` (``https://``, ``file://``, ``http://127.0.0.1``). A remote entry
is described by its card alone: ``card.json`` is downloaded first, then every file it lists,
relative to the card's URL, each checked against the card's sha256; the whole entry lands in the
cache (:func:`~brickzoo.zoo._download.brickzoo_home`) only when every file is verified. Append
``#sha256=<hash of card.json>`` to the URL to pin the card itself. A Hugging Face Hub repository
is the folder URL ``https://huggingface.co/<owner>/<repo>/resolve/<revision>/``. A shipped card
may set ``url`` and leave its weight files out: they are then downloaded from there.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import fnmatch
import hashlib
import json
import math
import shutil
import urllib.parse
import warnings
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from brickzoo._collection import BrickCollection
from brickzoo._weights import LoadReport, load_bricks
from brickzoo.errors import (
    ConfigError,
    WeightsError,
    WeightsNotADirectoryError,
    WeightsNotFoundError,
    ZooError,
)
from brickzoo.zoo._cards import (
    CARD_FILE,
    CHECKSUMS_FILE,
    CONFIG_FILE,
    NAME_PATTERN,
    WEIGHTS_DIR,
    ModelCard,
    card_from_dict,
    differing_keys,
    read_card,
)
from brickzoo.zoo._download import (
    DEFAULT_TIMEOUT,
    brickzoo_home,
    check_url,
    download_file,
    is_url,
    join_url,
    sha256_of,
    staged_folder,
)

if TYPE_CHECKING:
    from brickzoo.zoo._recipe import Recipe

SHIPPED_PACKAGE = "brickzoo.zoo.pretrained"
ZOO_PREFIX = "zoo:"
PRETRAINED_RECORD_FILE = "pretrained.json"
"""Written into the run folder of a fine-tune of a prebuilt model: the entry's card metadata and what was loaded."""
CACHE_SUBDIR = "pretrained"


@dataclasses.dataclass(frozen=True)
class _Fetch:
    """How remote files are fetched: seconds without data before giving up, a progress bar, a fresh copy."""

    timeout: float = DEFAULT_TIMEOUT
    progress: bool = True
    force_download: bool = False


@dataclasses.dataclass(frozen=True)
class PretrainedEntry:
    """A zoo entry found on this machine: its verified folder and its card.

    Attributes:
        name: the card's name.
        folder: the local folder holding ``card.json``, ``config.yaml`` and ``weights/``
            (inside the package, the folder given, or the download cache).
        card: the :class:`ModelCard`.
        source: what the caller asked for (a name, a path or an URL).
    """

    name: str
    folder: Path
    card: ModelCard
    source: str

    @property
    def weights_dir(self) -> Path:
        """The per-brick weight folder: pass it wherever a weight folder is taken (``load_bricks``, ``--weights``)."""
        return self.folder / WEIGHTS_DIR

    @property
    def config(self) -> dict[str, Any]:
        """A copy of the fully resolved zoo config the entry was trained from."""
        return copy.deepcopy(self.card.config)


@dataclasses.dataclass
class Pretrained:
    """What :func:`load_pretrained` returns: the model with its weights, its card and where they came from.

    Attributes:
        model: the brick collection, weights loaded, in eval mode.
        card: the entry's :class:`ModelCard` (class names, preprocessing, metrics...).
        entry: the :class:`PretrainedEntry` (its ``folder`` and ``weights_dir``).
        config: the zoo config the model was built from (the card's, overrides applied).
        report: the :class:`~brickzoo.LoadReport` of the weights.
        recipe: the :class:`~brickzoo.zoo.Recipe` built without data from ``config``: its
            ``model`` is ``model``; its eval pipeline, input size and export settings serve
            :class:`brickzoo.predict.Predictor` and :func:`brickzoo.zoo.export_onnx`.
    """

    model: BrickCollection
    card: ModelCard
    entry: PretrainedEntry
    config: dict[str, Any]
    report: LoadReport
    recipe: Recipe

    @property
    def class_names(self) -> dict[str, list[str]]:
        """Head name -> class names, from the card."""
        return self.card.class_names


# -- the registry ---------------------------------------------------------------------------------------
def shipped_dir() -> Path:
    """The folder of the entries shipped with brickzoo (the package ``brickzoo.zoo.pretrained``)."""
    return Path(str(resources.files(SHIPPED_PACKAGE)))


def _shipped() -> dict[str, Path]:
    """Name -> folder of every shipped entry (a sub-folder holding a ``card.json``)."""
    return {card.parent.name: card.parent for card in sorted(shipped_dir().glob(f"*/{CARD_FILE}"))}


def list_pretrained(filter: str | None = None) -> list[str]:  # noqa: A002 (timm's list_models(filter))
    """The names of the shipped prebuilt models, sorted; ``filter`` is a case-insensitive fnmatch pattern.

    Example:
        >>> list_pretrained("shapes_*")  # doctest: +SKIP
        ['shapes_multitask']
        >>> list_pretrained("no_such_model_*")
        []
    """
    names = sorted(_shipped())
    if filter is None:
        return names
    return [n for n in names if fnmatch.fnmatchcase(n.lower(), filter.lower())]


def pretrained_cards(filter: str | None = None) -> dict[str, ModelCard]:  # noqa: A002
    """Name -> card of the shipped entries (cards only: no weight file is read or downloaded).

    For ``brickzoo zoo list`` and the README's zoo table (:func:`~brickzoo.zoo.cards_table`).

    Raises:
        ConfigError: a shipped card is invalid, or its name is not its folder's name.
    """
    cards = {}
    for name in list_pretrained(filter):
        card = read_card(_shipped()[name] / CARD_FILE)
        if card.name != name:
            raise ConfigError(f"{_shipped()[name] / CARD_FILE}: name {card.name!r}, but the shipped folder is {name!r}")
        cards[name] = card
    return cards


def is_pretrained_reference(text: str) -> bool:
    """Whether a ``--weights`` value names a zoo entry (``zoo:<name>`` or an URL) rather than a local folder.

    >>> is_pretrained_reference("zoo:shapes_multitask"), is_pretrained_reference("runs/shapes_multitask")
    (True, False)
    """
    return str(text).startswith(ZOO_PREFIX) or is_url(str(text))


def _unknown_name(name: str) -> ZooError:
    known = list_pretrained()
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"did you mean {close}? " if close else ""
    return ZooError(
        f"unknown prebuilt model {name!r}; {hint}known: {known or 'none shipped'}. "
        "A zoo entry folder or the https:// URL of one works too"
    )


# -- finding an entry ------------------------------------------------------------------------------------
def _local_folder(path: Path) -> Path:
    """The entry folder ``path`` names (the folder itself, or the folder of a ``card.json``)."""
    if path.is_file():
        if path.name == CARD_FILE:
            return path.parent
        raise WeightsNotADirectoryError(f"{path} is a file; expected a zoo entry folder (holding {CARD_FILE})")
    if not path.is_dir():
        raise WeightsNotFoundError(f"zoo entry folder {path} does not exist")
    if not (path / CARD_FILE).is_file():
        raise WeightsNotFoundError(
            f"{path} holds no {CARD_FILE}; expected a zoo entry folder written by publish_pretrained "
            "(a training run folder becomes one with `brickzoo zoo publish RUN --name NAME --out DIR`)"
        )
    return path


def _locate(source: str | Path, fetch: _Fetch) -> Path:
    """The local folder of an entry named by ``source``; downloads into the cache when it is remote."""
    if isinstance(source, Path):
        return _local_folder(source)
    text = str(source)
    if text.startswith(ZOO_PREFIX):
        name = text[len(ZOO_PREFIX) :]
        if name not in _shipped():
            raise _unknown_name(name)
        return _shipped_folder(_shipped()[name], fetch)
    if "://" in text:
        return _download_entry(text, fetch)
    if text in _shipped():
        return _shipped_folder(_shipped()[text], fetch)
    if Path(text).exists():
        return _local_folder(Path(text))
    if NAME_PATTERN.match(text):
        raise _unknown_name(text)
    raise WeightsNotFoundError(
        f"{text!r}: no such folder; expected a prebuilt model name {list_pretrained()}, a zoo entry folder "
        "or an https:// / file:// URL"
    )


def _cache_folder(label: str, key: str) -> Path:
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in label).strip("._") or "entry"
    return brickzoo_home() / CACHE_SUBDIR / f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _split_url(url: str) -> tuple[str, str, str | None]:
    """``(folder URL, card URL, pinned sha256 of the card or None)`` of an entry URL."""
    parts = urllib.parse.urlsplit(url)
    fragment = urllib.parse.parse_qs(parts.fragment)
    pin = fragment.get("sha256", [None])[0]
    bare = urllib.parse.urlunsplit(parts._replace(fragment=""))
    if bare.endswith(f"/{CARD_FILE}"):
        return bare[: -len(CARD_FILE)], bare, pin
    folder = bare if bare.endswith("/") else bare + "/"
    return folder, folder + CARD_FILE, pin


def _download_entry(url: str, fetch: _Fetch) -> Path:
    """Download ``card.json`` and every file it lists into a cache folder (complete or absent)."""
    check_url(url)
    base, card_url, pin = _split_url(url)
    label = urllib.parse.unquote(base.rstrip("/").rsplit("/", 1)[-1])
    target = _cache_folder(label, card_url + (pin or ""))
    if fetch.force_download and target.exists():
        shutil.rmtree(target)
    if (target / CARD_FILE).is_file():
        return target
    with staged_folder(target) as tmp:
        download_file(card_url, tmp / CARD_FILE, pin, timeout=fetch.timeout, progress=False)
        card = read_card(tmp / CARD_FILE)
        for relative, record in card.files.items():
            file_url = join_url(base, relative)
            download_file(file_url, tmp / relative, record.sha256, timeout=fetch.timeout, progress=fetch.progress)
    return target


def _shipped_folder(folder: Path, fetch: _Fetch) -> Path:
    """A shipped entry's folder; when its weights are hosted (``url`` in the card), a cache folder with them."""
    card = read_card(folder / CARD_FILE)
    if card.name != folder.name:
        raise ConfigError(f"{folder / CARD_FILE}: name {card.name!r}, but the shipped folder is {folder.name!r}")
    missing = [f for f in card.files if not (folder / f).is_file()]
    if not missing or card.url is None:
        return folder
    target = _cache_folder(card.name, sha256_of(folder / CARD_FILE))
    if fetch.force_download and target.exists():
        shutil.rmtree(target)
    if (target / CARD_FILE).is_file():
        return target
    with staged_folder(target) as tmp:
        shutil.copy2(folder / CARD_FILE, tmp / CARD_FILE)
        for relative, record in card.files.items():
            if (folder / relative).is_file():
                (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(folder / relative, tmp / relative)
            else:
                url = join_url(card.url, relative)
                download_file(url, tmp / relative, record.sha256, timeout=fetch.timeout, progress=fetch.progress)
    return target


def _file_problems(folder: Path, card: ModelCard) -> list[str]:
    """Every file of the card that is missing or whose sha256 differs, and disagreements of ``checksums.sha256``."""
    problems = []
    for relative, record in sorted(card.files.items()):
        file = folder / relative
        if not file.is_file():
            problems.append(f"{relative}: missing")
            continue
        got = sha256_of(file)
        if got != record.sha256:
            problems.append(f"{relative}: expected sha256 {record.sha256} (card), got {got}")
    checksums = folder / CHECKSUMS_FILE
    if checksums.is_file():
        hashes = _read_checksums(checksums)
        expected = {path: record.sha256 for path, record in card.files.items()}
        for path in differing_keys(hashes, expected):
            problems.append(f"{CHECKSUMS_FILE}: {path} is {hashes.get(path)!r}, the card says {expected.get(path)!r}")
    return problems


def _read_checksums(file: Path) -> dict[str, str]:
    """Path -> sha256 of a ``sha256sum`` file (``<hash>  <path>`` lines; ``*`` marks binary mode)."""
    hashes = {}
    for line in file.read_text(encoding="utf-8", errors="replace").splitlines():
        digest, _, path = line.strip().partition(" ")
        if digest:
            hashes[path.strip().removeprefix("*")] = digest
    return hashes


def _check_config_file(folder: Path, card: ModelCard) -> None:
    """``config.yaml`` must hold the config embedded in the card."""
    file = folder / CONFIG_FILE
    try:
        config = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
    keys = differing_keys(config, card.config)
    if keys:
        raise ConfigError(f"{file} differs from the config embedded in {folder / CARD_FILE} at keys: {keys}")


def find_pretrained(
    source: str | Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True,
    force_download: bool = False,
) -> PretrainedEntry:
    """Find an entry, download it if it is remote, and verify every file against its card.

    Args:
        source: a shipped name (``"shapes_multitask"`` or ``"zoo:shapes_multitask"``), a
            local entry folder (or its ``card.json``), or an URL of one (``https://``,
            ``file://``, ``http://127.0.0.1``; optionally ``#sha256=<hash of card.json>``).
        timeout: seconds to wait for a server before giving up (per connection and block).
        progress: show download progress bars.
        force_download: download a remote entry again even when it is in the cache.

    Returns:
        The :class:`PretrainedEntry`.

    Raises:
        ZooError: an unknown name (with close matches and the known names).
        WeightsNotFoundError: no such folder, no card in it, or a 404.
        ConfigError: an invalid card, or a ``config.yaml`` that differs from the card's config.
        WeightsError: a file missing or with another sha256 (every one listed), a download
            that failed (naming the URL and how to use a local copy).

    Example:
        >>> entry = find_pretrained("zoo:shapes_multitask")  # doctest: +SKIP
        >>> entry.weights_dir  # pass it to load_bricks or --weights  # doctest: +SKIP
        PosixPath('.../brickzoo/zoo/pretrained/shapes_multitask/weights')
    """
    fetch = _Fetch(timeout=timeout, progress=progress, force_download=force_download)
    folder = _locate(source, fetch)
    card = read_card(folder / CARD_FILE)
    problems = _file_problems(folder, card)
    if problems:
        cached = brickzoo_home() in folder.parents
        hint = f"\nthis is a cached download: delete {folder} or pass force_download=True" if cached else ""
        raise WeightsError(
            f"zoo entry {folder} does not match its card ({len(problems)} problem{'s' * (len(problems) > 1)}):\n  "
            + "\n  ".join(problems)
            + hint
        )
    _check_config_file(folder, card)
    return PretrainedEntry(name=card.name, folder=folder, card=card, source=str(source))


# -- building and loading -----------------------------------------------------------------------------------
def build_pretrained_recipe(config: Mapping[str, Any], origin: str = "<card>") -> Recipe:
    """The recipe of a fully resolved zoo config, built without any dataset (``build_recipe(with_data=False)``).

    Every head must give ``num_classes`` and ``class_names``; a backbone's ``pretrained``
    is switched off (the entry's weights replace every tensor). The weights are initialised
    under ``train.seed``.

    Raises:
        ConfigError: the config is invalid or does not build; the message names ``origin`` and the keys.
    """
    from brickzoo.zoo._config import validate_config
    from brickzoo.zoo._recipe import build_recipe

    config = copy.deepcopy(dict(config))
    validate_config(config, f"the config embedded in {origin}")
    backbone = config["model"]["backbone"]
    if backbone.get("pretrained"):
        backbone["pretrained"] = False
    try:
        return build_recipe(config, with_data=False)
    except ConfigError as exc:
        raise ConfigError(f"the config embedded in {origin} does not build: {exc}") from None


def load_pretrained(
    source: str | Path,
    *,
    overrides: Sequence[str] = (),
    strict: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True,
    force_download: bool = False,
) -> Pretrained:
    """Build a prebuilt model from its card's config and load its weights.

    Args:
        source: a shipped name, ``zoo:<name>``, an entry folder or an URL (see :func:`find_pretrained`).
        overrides: ``key.sub=value`` changes to the card's config before building (e.g.
            ``"model.heads.classify.dropout=0.2"``); ones that change shapes need ``strict=False``.
        strict: every brick must load exactly (``brickzoo.load_bricks(strict=True)``); with
            False, what fits is loaded and the rest keeps its initialisation (fine-tuning),
            as the returned ``report`` says.
        timeout: seconds to wait for a server before giving up.
        progress: show download progress bars.
        force_download: download a remote entry again even when it is in the cache.

    Returns:
        A :class:`Pretrained` (``model`` in eval mode, ``card``, ``entry``, ``config``, ``report``).

    Raises:
        As :func:`find_pretrained`; ConfigError: bad overrides or a config that does not build;
        WeightsError: with ``strict``, weights that do not fit the config (listing the bricks).

    Example:
        >>> pretrained = load_pretrained("shapes_multitask")  # doctest: +SKIP
        >>> outputs = pretrained.model({"images": images}, stage=Stage.INFERENCE)  # doctest: +SKIP
        >>> pretrained.card.heads["classify"].class_names  # doctest: +SKIP
        ['circle', 'square', 'triangle', 'star']
    """
    from brickzoo.training import load_finetune_weights
    from brickzoo.zoo._config import apply_overrides

    entry = find_pretrained(source, timeout=timeout, progress=progress, force_download=force_download)
    config = apply_overrides(entry.config, overrides)
    recipe = build_pretrained_recipe(config, str(entry.folder / CARD_FILE))
    model = recipe.model
    report = (
        load_bricks(model, entry.weights_dir, strict=True)
        if strict
        else load_finetune_weights(model, entry.weights_dir)
    )
    return Pretrained(model=model.eval(), card=entry.card, entry=entry, config=config, report=report, recipe=recipe)


def verify_pretrained(source: str | Path, *, timeout: float = DEFAULT_TIMEOUT, progress: bool = True) -> dict[str, str]:
    """Check an entry completely: its card, every file's sha256, and that its config builds a model its weights fit.

    Returns:
        File (relative to the entry folder) -> its verified sha256.

    Raises:
        As :func:`find_pretrained` and :func:`load_pretrained` (every hash problem listed at once).

    Example:
        >>> verify_pretrained("shapes_multitask")  # doctest: +SKIP
        {'config.yaml': '3f2a...', 'weights/backbone.safetensors': '9c1d...', ...}
    """
    entry = find_pretrained(source, timeout=timeout, progress=progress)
    model = build_pretrained_recipe(entry.config, str(entry.folder / CARD_FILE)).model
    load_bricks(model, entry.weights_dir, strict=True)
    return {relative: record.sha256 for relative, record in sorted(entry.card.files.items())}


def evaluate_pretrained(
    pretrained: Pretrained, split: str | None = None, num_samples: int | None = None, device: str = "cpu"
) -> dict[str, Any]:
    """Evaluate a loaded prebuilt model on a split of its own config's data, as its card's metrics were measured.

    The split goes through the config's eval pipeline (letterbox or resize to the input size)
    and :func:`brickzoo.training.evaluate` (stage TEST) in batches of ``data.eval_batch_size``.

    Args:
        pretrained: what :func:`load_pretrained` returned.
        split: ``train``, ``val`` or ``test``; by default the test split if the config has one, else val.
        num_samples: only the first N images of the split (the card's ``metrics.subset``).
        device: where to run.

    Returns:
        What :func:`brickzoo.training.evaluate` returns (losses, ``<head>/<metric>`` values,
        confusion matrices); :func:`card_metric_values` keeps what a card holds.

    Raises:
        ConfigError: no such split, or ``num_samples`` below 1.
    """
    from torch.utils.data import Subset

    from brickzoo.data import make_loader
    from brickzoo.training import evaluate
    from brickzoo.zoo._recipe import build_recipe

    recipe = build_recipe(pretrained.config)  # the datasets; the model evaluated is pretrained.model
    split = split or recipe.evaluation_split()
    if split not in recipe.datasets:
        raise ConfigError(
            f"{pretrained.entry.folder}: its config has no {split!r} split (have {sorted(recipe.datasets)})"
        )
    dataset = recipe.datasets[split]
    if num_samples is not None:
        if num_samples < 1:
            raise ConfigError(f"evaluate_pretrained: num_samples must be 1 or more, got {num_samples}")
        dataset = Subset(dataset, range(min(num_samples, len(dataset))))  # type: ignore[arg-type]
    loader = make_loader(dataset, batch_size=recipe.eval_batch_size, shuffle=False, seed=recipe.train_config.seed)
    return evaluate(pretrained.model, loader, device=device)


# -- publishing a training run ----------------------------------------------------------------------------
RUN_CONFIG_FILE = "config.json"
RUN_FINAL_METRICS_FILE = "final_metrics.json"
_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def _read_json(file: Path, what: str) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: not valid JSON ({what}): {exc}") from exc


def _run_config(run: Path) -> dict[str, Any]:
    """The validated zoo config of a run folder (its ``config.json``)."""
    from brickzoo.zoo._config import load_config

    if not run.is_dir():
        raise WeightsNotFoundError(f"run folder {run} does not exist; expected a folder written by `brickzoo train`")
    file = run / RUN_CONFIG_FILE
    if not file.is_file():
        raise WeightsNotFoundError(
            f"run folder {run} holds no {RUN_CONFIG_FILE}; expected a folder written by `brickzoo train` "
            "(fit() alone writes none: also call brickzoo.training.write_config(run_dir, zoo_config))"
        )
    try:
        config, _ = load_config(_read_json(file, "the run's zoo config"))
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    return config


def resolve_config(config: Mapping[str, Any], origin: str = "<config>") -> dict[str, Any]:
    """A validated zoo config with everything left to the data written out: :attr:`Recipe.resolved_config`.

    Every head's ``num_classes`` and ``class_names`` become explicit (heads left on ``auto``
    take their classes from the config's training dataset, whose constructor alone is read),
    and so do ``data.transforms`` and ``data.image_size``. A backbone's ``pretrained`` is
    switched off: an entry's own weights replace every tensor. The result holds JSON types only.

    Raises:
        ConfigError: a head whose class names neither the config nor the dataset gives.
    """
    from brickzoo.zoo._recipe import build_recipe

    resolved = copy.deepcopy(build_recipe(config, with_data=False).resolved_config)
    missing = [
        f"model.heads.{name}.class_names: not given, and the dataset names no classes; set it"
        for name, head in resolved["model"]["heads"].items()
        if not isinstance(head.get("class_names"), list)
    ]
    if missing:
        raise ConfigError(f"{origin}: a zoo entry needs the class names of every head:\n  " + "\n  ".join(missing))
    if resolved["model"]["backbone"].get("pretrained"):
        resolved["model"]["backbone"]["pretrained"] = False
    return resolved


def _floating_as(state: Mapping[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The state with its floating tensors cast to ``dtype`` (integer buffers such as counters kept)."""
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def _write_weights(model: BrickCollection, folder: Path, dtype: str) -> None:
    """One safetensors file per brick with weights, floating tensors in ``dtype``; then load them back.

    Afterwards the model holds exactly what was stored (rounded to float16 and back, if so),
    so whatever is measured on it describes the stored weights.

    Raises:
        WeightsError: a tensor that ``dtype`` cannot hold (beyond float16's range).
    """
    from brickzoo._weights import save_state

    for path, brick in model.named_bricks():
        state = brick.state_dict()
        if not state:
            continue
        stored = _floating_as(state, _DTYPES[dtype])
        overflow = [k for k, v in stored.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        overflow = [k for k in overflow if torch.isfinite(state[k]).all()]
        if overflow:
            raise WeightsError(
                f"brick '{path}': tensors {overflow} hold values beyond the range of {dtype}; "
                "publish with dtype='float32'"
            )
        save_state(stored, folder / f"{path}.safetensors")
    load_bricks(model, folder, strict=True)


def _preprocessing(recipe: Recipe, input_size: Sequence[int] | None, resize: str | None) -> Any:
    """The card's :class:`Preprocessing`: the model's one input, its size, resize mode and normalisation.

    The size and resize mode are the recipe's (its eval pipeline; ``data.image_size``) unless given.
    """
    from brickzoo.bag_of_bricks.preprocessors import Preprocessor
    from brickzoo.zoo._cards import RESIZE_MODES, Preprocessing

    model = recipe.model
    inputs = model.required_inputs("MODEL")
    if len(inputs) != 1:
        raise ConfigError(f"publish: the model reads {inputs}; a zoo entry takes exactly one image input")
    modules = (getattr(brick, "model", None) for _, brick in model.named_bricks())
    pre: Preprocessor | None = next((m for m in modules if isinstance(m, Preprocessor)), None)
    size = list(input_size) if input_size is not None else None
    size = size or (list(recipe.input_size) if recipe.input_size else None)
    size = size or (list(pre.size) if pre is not None and pre.size else None)
    if size is None or len(size) != 2:
        raise ConfigError(
            f"publish: cannot tell the input size (got {size!r}); pass input_size=(H, W), the size it was trained at"
        )
    resize = resize or ("letterbox" if recipe.resize_mode == "letterbox" else "stretch")
    if resize not in RESIZE_MODES:
        raise ConfigError(f"publish: resize must be one of {list(RESIZE_MODES)}, got {resize!r}")
    mean = [round(float(v), 6) for v in pre.mean.flatten()] if pre is not None else []
    std = [round(float(v), 6) for v in pre.std.flatten()] if pre is not None else []
    return Preprocessing(inputs[0], [int(v) for v in size], resize, mean, std, pre is not None)


def describe_split(config: Mapping[str, Any], split: str) -> str:
    """A name for a split of a config's dataset precise enough to rebuild it.

    >>> describe_split({"data": {"dataset": "shapes", "args": {"image_size": 64}, "val": {"seed": 7}}}, "val")
    'shapes val split (image_size=64, seed=7)'
    """
    data = config["data"]
    arguments = {**(data.get("args") or {}), **(data.get(split) or {})}
    listed = ", ".join(f"{k}={v}" for k, v in sorted(arguments.items()))
    return f"{data['dataset']} {split} split ({listed})"


def card_metric_values(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float | None]:
    """The metrics a card holds: ``<head>/<metric>`` scalars (None for non-finite), losses and lists left out.

    Args:
        metrics: what :func:`brickzoo.training.evaluate` returns, or a run's ``final_metrics.json``.
        prefix: only keys starting with it, which is removed (``"val/"`` for a run's metrics).

    >>> card_metric_values({"val/classify/accuracy": 0.5, "val/classify/loss": 1.2, "val/loss": 1.2}, "val/")
    {'classify/accuracy': 0.5}
    """
    values: dict[str, float | None] = {}
    for key, value in metrics.items():
        if not key.startswith(prefix) or "/" not in key[len(prefix) :]:
            continue
        name = key[len(prefix) :]
        if name.rsplit("/", 1)[1].startswith("loss") or isinstance(value, bool):
            continue
        if value is None or isinstance(value, (int, float)):
            number = None if value is None else float(value)
            values[name] = number if number is not None and math.isfinite(number) else None
    return values


def _card_metrics(
    run: Path,
    config: Mapping[str, Any],
    measured: tuple[Mapping[str, Any] | None, str | None, tuple[int, Mapping[str, Any]] | None],
    dtype: str,
) -> Any:
    """The card's metrics: the ones given (measured on the stored weights), or the run's validation metrics."""
    from brickzoo.zoo._cards import CardMetrics, SubsetMetrics

    metrics, dataset, subset = measured
    if metrics is not None:
        if not dataset:
            raise ConfigError("publish: metrics given without metrics_dataset, the held-out set they were measured on")
        part = None if subset is None else SubsetMetrics(int(subset[0]), card_metric_values(subset[1]))
        return CardMetrics(dataset, card_metric_values(metrics), "stored weights", part)
    if subset is not None:
        raise ConfigError("publish: metrics_subset given without metrics, the full held-out set's values")
    file = run / RUN_FINAL_METRICS_FILE
    final = _read_json(file, "the run's final metrics") if file.is_file() else {}
    values = card_metric_values(final, "val/")
    if not values:
        raise ConfigError(
            f"publish: {file} holds no validation metrics (val/<head>/<metric>); pass metrics= and metrics_dataset="
        )
    weights = "float32 weights of the training run"
    if dtype != "float32":
        warnings.warn(
            f"publish: the card's metrics come from {file}, measured before the weights were stored as {dtype}; "
            "pass metrics measured on the stored entry (load_pretrained + evaluate) to publish exact figures",
            stacklevel=3,
        )
        weights += f", before rounding to {dtype}"
    return CardMetrics(dataset or describe_split(config, "val"), values, weights)


def _write_config_file(folder: Path, config: Mapping[str, Any], name: str, command: str) -> None:
    header = (
        f"# {name}: the zoo config of the prebuilt model {name!r}, fully resolved (explicit classes).\n"
        f"# Reproduce: {command}\n"
    )
    text = header + yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True)
    (folder / CONFIG_FILE).write_text(text, encoding="utf-8")


def _write_entry_files(folder: Path, card: ModelCard) -> None:
    """``card.json``, ``checksums.sha256`` and ``README.md`` of a card whose other files are written."""
    from brickzoo.zoo._cards import README_FILE, card_markdown, write_card

    card_from_dict(card.to_dict(), str(folder / CARD_FILE))  # what is written reads back
    write_card(card, folder / CARD_FILE)
    lines = [f"{record.sha256}  {path}\n" for path, record in sorted(card.files.items())]
    (folder / CHECKSUMS_FILE).write_text("".join(lines), encoding="utf-8")
    (folder / README_FILE).write_text(card_markdown(card), encoding="utf-8")


def _file_records(folder: Path) -> dict[str, Any]:
    from brickzoo.zoo._cards import FileRecord

    files = [folder / CONFIG_FILE, *sorted((folder / WEIGHTS_DIR).rglob("*.safetensors"))]
    return {f.relative_to(folder).as_posix(): FileRecord(sha256_of(f), f.stat().st_size) for f in files}


def _check_publish_arguments(name: str, target: Path, dtype: str, overwrite: bool) -> None:
    from brickzoo.errors import OutputError

    if not NAME_PATTERN.match(name):
        raise ConfigError(
            f"publish: name must be letters, digits, '_', '.' or '-' (e.g. shapes_multitask), got {name!r}"
        )
    if dtype not in _DTYPES:
        raise ConfigError(f"publish: dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    if target.exists() and not overwrite:
        raise OutputError(f"publish: {target} already exists; choose another --out or name, or pass overwrite=True")
    if target.exists() and not (target / CARD_FILE).is_file():
        raise OutputError(f"publish: {target} exists and is not a zoo entry; it is never overwritten")


def publish_pretrained(
    run_folder: str | Path,
    name: str,
    out_dir: str | Path,
    *,
    description: str | None = None,
    license: str = "MIT",  # noqa: A002 (the card's field)
    command: str | None = None,
    input_size: Sequence[int] | None = None,
    resize: str | None = None,
    dtype: str = "float32",
    metrics: Mapping[str, Any] | None = None,
    metrics_dataset: str | None = None,
    metrics_subset: tuple[int, Mapping[str, Any]] | None = None,
    url: str | None = None,
    measure_latency: bool = True,
    overwrite: bool = False,
) -> PretrainedEntry:
    """Turn a training run folder into a zoo entry folder ``<out_dir>/<name>`` with card and checksums.

    The run's zoo config (``config.json``) is resolved (explicit classes, see
    :func:`resolve_config`) and built; its last checkpoint is loaded strictly (every brick);
    the weights are written as per-brick safetensors (``dtype`` float16 halves them) and loaded
    back, so parameters, GFLOPs and the ONNX latency are measured on the stored weights. The
    entry is assembled in a temporary folder and renamed into place when complete.

    Args:
        run_folder: written by ``brickzoo train`` (``config.json``, ``final_metrics.json``, ``checkpoint/``).
        name: the entry's name (letters, digits, ``_``, ``.``, ``-``).
        out_dir: the folder to write ``<name>/`` in.
        description: one line; the config's ``description`` by default.
        license: the weights' licence (SPDX identifier).
        command: the command that reproduces the entry; by default training its config.yaml
            and publishing the run.
        input_size: ``(H, W)``; by default the preprocessor's size or the dataset's ``image_size``.
        resize: ``letterbox`` or ``stretch``; by default ``letterbox`` when the data section
            uses a letterbox transform.
        dtype: ``float32`` or ``float16`` storage of floating tensors (loaded into float32).
        metrics: metric values measured on the stored entry; the run's last validation
            metrics (``final_metrics.json``) by default.
        metrics_dataset: the held-out set of ``metrics``; the config's validation split by default.
        metrics_subset: ``(N, metrics)`` measured like ``metrics`` on the first N images of the
            held-out set (what a test suite can recompute quickly); needs ``metrics``.
        url: where the files will be hosted, written into the card.
        measure_latency: export to ONNX and time it at batch 1 (a few seconds).
        overwrite: replace an existing entry folder ``<out_dir>/<name>``.

    Returns:
        The published, verified :class:`PretrainedEntry`.

    Raises:
        WeightsNotFoundError: no run folder or no ``config.json``; WeightsError: weights that
        do not fit the config; ConfigError: bad arguments or missing class names or metrics;
        OutputError: ``<out_dir>/<name>`` exists (without ``overwrite``).

    Example:
        >>> entry = publish_pretrained("runs/shapes_multitask", "shapes_multitask", "zoo")  # doctest: +SKIP
        >>> load_pretrained(entry.folder).card.metrics.values  # doctest: +SKIP
        {'classify/accuracy': 0.96, 'segment/miou': 0.88, 'detect/map': 0.71}
    """
    import brickzoo
    from brickzoo.training import load_weights
    from brickzoo.zoo._cards import (
        ModelCard,
        count_gflops,
        count_parameters,
        heads_of_config,
        measure_onnx_latency,
        today,
    )

    run, target = Path(run_folder), Path(out_dir) / name
    _check_publish_arguments(name, target, dtype, overwrite)
    config = resolve_config(_run_config(run), str(run / RUN_CONFIG_FILE))
    recipe = build_pretrained_recipe(config, str(run / RUN_CONFIG_FILE))
    model = recipe.model
    load_weights(model, run)
    command = command or (
        f"brickzoo train {name}/{CONFIG_FILE} --out runs && brickzoo zoo publish runs/{config.get('name', name)} "
        f"--name {name} --out {out_dir}"
    )
    with staged_folder(target) as tmp:
        _write_weights(model.eval(), tmp / WEIGHTS_DIR, dtype)
        _write_config_file(tmp, config, name, command)
        preprocessing = _preprocessing(recipe, input_size, resize)
        generator = torch.Generator().manual_seed(0)
        inputs = {preprocessing.input_name: torch.rand(1, 3, *preprocessing.input_size, generator=generator)}
        card = ModelCard(
            name=name,
            description=description or str(config.get("description") or f"{name}, published from {run.name}"),
            heads=heads_of_config(config, str(run / RUN_CONFIG_FILE)),
            config=config,
            preprocessing=preprocessing,
            metrics=_card_metrics(run, config, (metrics, metrics_dataset, metrics_subset), dtype),
            num_params=count_parameters(model),
            gflops=count_gflops(model, inputs),
            onnx_latency=measure_onnx_latency(model, inputs) if measure_latency else None,
            files=_file_records(tmp),
            storage_dtype=dtype,
            command=command,
            versions={"brickzoo": brickzoo.__version__, "torch": torch.__version__},
            date=today(),
            license=license,
            url=url,
        )
        _write_entry_files(tmp, card)
        if target.exists():  # overwrite=True, checked above
            shutil.rmtree(target)
    return find_pretrained(target)
