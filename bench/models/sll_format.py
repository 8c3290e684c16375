"""``format = "sll"``: checkpoints of the SLL authors (Araujo et al., ICLR 2023;
araujoalexandre/Lipschitz-SLL-Networks, code as of commit 87865dbf, Oct 2023).

Their file is ``{'epoch', 'global_step', 'model_state_dict', 'optimizer_state_dict'}`` of
``DataParallel(NormalizedModel(LipschitzNetwork))``: keys ``module.model.model.{i}.*`` with

* ``0``: PaddingChannels (zero padding 3 -> ``width`` channels; no state);
* ``1 .. n_conv``: SDPBasedLipschitzConvLayer, ``kernel`` [conv_inner, width, 3, 3], ``bias``
  [1, conv_inner, 1, 1], ``q`` [conv_inner];
* ``n_conv + 1``: AvgPool2d(4, divisor_override=4); ``n_conv + 2``: Flatten (no state);
* ``n_conv + 3 .. n_conv + 2 + n_dense``: SDPBasedLipschitzLinearLayer, ``weight`` [dense_inner, F],
  ``bias`` [1, dense_inner], ``q`` [dense_inner], F = width * (side / 4)^2;
* ``n_conv + n_dense + 3``: LinearNormalized, ``weight`` [classes, F], ``bias`` [classes], rows
  L2-normalised in the forward.

Their layers and this project's (:mod:`fars.sll`) compute the same functions:

* conv: y = x - 2 convT(t * ReLU(conv(x, K) + b), K), t_i = 1 / sum_{j,offsets} |K * K|_ij (0 where the sum
  is 0). Their ``q`` enters as exp(-q_i) * |K * K|_ij * exp(q_i): both factors broadcast on the output
  axis and cancel, so ``q`` has no effect; :class:`fars.SLLConv2d` with ``log_q = 0`` is that map (and is
  1-Lipschitz for any kernel). The file's ``q`` is checked for shape and not used.
* dense: y = x - 2 W^T diag(t) ReLU(W x + b), t_i = 1 / sum_j |exp(-q_i) (W W^T)_ij exp(q_j)|:
  :class:`fars.SLLDense` with ``log_q = q``.
* last layer: F.normalize(weight, dim=1) x + bias, here an ``nn.Linear`` with the normalised rows baked in,
  so that ``fars-closed`` computes their certificate min_j (f_c - f_j) / ||w_c - w_j||.

Inputs go through Normalize(mean, std = 1) first (their readers with ``shift_data = True``): CIFAR-10 mean
(0.4913, 0.4821, 0.4465), CIFAR-100 (0.5071, 0.4865, 0.4409), Tiny ImageNet the ImageNet mean.

The backbone is that shift and everything before the last layer: l2 Lipschitz constant 1 in pixel units.

Spec keys: ``checkpoint`` (file, required), ``dataset`` (``cifar10``, ``cifar100``, ``tiny-imagenet``;
required), and exactly one of ``size`` (``small``, ``medium``, ``large``, ``xlarge``, their ``--model-name``)
or ``layout`` (a table ``{n_conv, n_dense, width, conv_inner, dense_inner}`` for another size). The
fingerprint is the SHA-256 of the checkpoint file.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from fars.sll import LipschitzAvgPool2d, PadChannels, SLLConv2d, SLLDense

from .keys import mismatch_message
from .loaded import (
    LoadedModel,
    SpecReader,
    casts_record,
    check_dense,
    file_fingerprint,
    load_state_strict,
    load_weights_only,
    split_network,
    state_dict_of,
)
from .normalization import InputNormalization


@dataclass(frozen=True)
class SLLLayout:
    """Shape of the authors' LipschitzNetwork (their config fields n_conv, n_dense, w, conv_inner_dim,
    dense_inner_dim). Raises ``ValueError`` for a non-integer or out-of-range field."""

    n_conv: int
    n_dense: int
    width: int
    conv_inner: int = 5
    dense_inner: int = 2048

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            minimum = {"n_conv": 0, "n_dense": 0, "width": 3}.get(f.name, 1)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{f.name} must be an integer >= {minimum}, got {value!r}")


#: their ``--model-name`` sizes (main.py: n_conv, n_dense, w, dense_inner_dim; conv_inner_dim defaults to 5)
SLL_SIZES: dict[str, SLLLayout] = {
    "small": SLLLayout(20, 7, 45),
    "medium": SLLLayout(30, 10, 60),
    "large": SLLLayout(50, 10, 90),
    "xlarge": SLLLayout(70, 15, 120),
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)


@dataclass(frozen=True)
class SLLDataset:
    """What the authors' code derives from ``--dataset``: the input shift, the image side and the classes."""

    mean: tuple[float, float, float]
    side: int
    num_classes: int


SLL_DATASETS: dict[str, SLLDataset] = {
    "cifar10": SLLDataset((0.4913, 0.4821, 0.4465), 32, 10),
    "cifar100": SLLDataset((0.5071, 0.4865, 0.4409), 32, 100),
    "tiny-imagenet": SLLDataset(IMAGENET_MEAN, 64, 200),
}
POOL = 4
KEYS = ("checkpoint", "size", "layout")


def _features(layout: SLLLayout, data: SLLDataset) -> int:
    return layout.width * (data.side // POOL) ** 2


def authors_state_shapes(layout: SLLLayout, dataset: str,
                         prefix: str = "module.model.model.") -> dict[str, tuple[int, ...]]:
    """The authors' ``model_state_dict`` keys and shapes for ``layout`` on ``dataset`` (a key of SLL_DATASETS)."""
    data = SLL_DATASETS[dataset]
    feats = _features(layout, data)
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(1, layout.n_conv + 1):
        shapes[f"{prefix}{i}.kernel"] = (layout.conv_inner, layout.width, 3, 3)
        shapes[f"{prefix}{i}.bias"] = (1, layout.conv_inner, 1, 1)
        shapes[f"{prefix}{i}.q"] = (layout.conv_inner,)
    first_dense = layout.n_conv + 3
    for i in range(first_dense, first_dense + layout.n_dense):
        shapes[f"{prefix}{i}.weight"] = (layout.dense_inner, feats)
        shapes[f"{prefix}{i}.bias"] = (1, layout.dense_inner)
        shapes[f"{prefix}{i}.q"] = (layout.dense_inner,)
    last = first_dense + layout.n_dense
    shapes[f"{prefix}{last}.weight"] = (data.num_classes, feats)
    shapes[f"{prefix}{last}.bias"] = (data.num_classes,)
    return shapes


def authors_parameter_count(layout: SLLLayout, dataset: str = "cifar10") -> int:
    """Number of parameters of the authors' network (what their trainer logs), from the shapes alone."""
    return sum(math.prod(s) for s in authors_state_shapes(layout, dataset).values())


def build_sll_network(layout: SLLLayout, dataset: str) -> nn.Sequential:
    """The authors' architecture from this project's layers, as ``Sequential(backbone=..., head=...)``.

    backbone: [B, 3, side, side] pixels -> [B, F] (Normalize(mean, 1), PadChannels, n_conv SLLConv2d, window-4
    sum / 4 pooling, flatten, n_dense SLLDense; l2 1-Lipschitz); head: ``nn.Linear(F, classes)``.
    Random weights; the conv layers' ``log_q`` is 0 (their conv ``q`` cancels, see the module doc).
    Works under ``torch.device("meta")`` to count parameters without allocating them.
    """
    return split_network(*_build(layout, dataset))


def _build(layout: SLLLayout, dataset: str) -> tuple[nn.Sequential, nn.Linear]:
    data = SLL_DATASETS[dataset]
    layers: list[nn.Module] = [InputNormalization(data.mean), PadChannels(3, layout.width)]
    layers += [SLLConv2d(layout.width, layout.conv_inner, 3) for _ in range(layout.n_conv)]
    layers += [LipschitzAvgPool2d(POOL), nn.Flatten()]
    feats = _features(layout, data)
    layers += [SLLDense(feats, layout.dense_inner) for _ in range(layout.n_dense)]
    return nn.Sequential(*layers), nn.Linear(feats, data.num_classes)


def _layout(reader: SpecReader) -> tuple[SLLLayout, str | None]:
    if reader.has("size") == reader.has("layout"):
        raise reader.error("size" if reader.has("size") else None, "give exactly one of 'size' and 'layout'")
    if reader.has("size"):
        size = reader.string("size", required=True, choices=tuple(SLL_SIZES))
        assert size is not None
        return SLL_SIZES[size], size
    table = reader.table("layout", required=True)
    assert table is not None
    known = [f.name for f in fields(SLLLayout)]
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise reader.error("layout", f"unknown field(s) {unknown}; fields: {known}")
    try:
        layout = SLLLayout(**table)
    except (TypeError, ValueError) as err:
        raise reader.error("layout", str(err)) from None
    return layout, None


def _convert(state: dict[str, torch.Tensor], layout: SLLLayout, dataset: str) -> dict[str, torch.Tensor]:
    """The authors' state (keys without prefix) -> this project's ``backbone.*`` / ``head.*`` keys."""
    ours: dict[str, torch.Tensor] = {}
    for i in range(1, layout.n_conv + 1):       # ours: backbone.0 = normalisation, so theirs i -> ours i + 1
        ours[f"backbone.{i + 1}.weight"] = state[f"{i}.kernel"]
        ours[f"backbone.{i + 1}.bias"] = state[f"{i}.bias"].reshape(-1)
        ours[f"backbone.{i + 1}.log_q"] = torch.zeros(layout.conv_inner, dtype=state[f"{i}.q"].dtype)
    first_dense = layout.n_conv + 3
    for i in range(first_dense, first_dense + layout.n_dense):
        ours[f"backbone.{i + 1}.weight"] = state[f"{i}.weight"]
        ours[f"backbone.{i + 1}.bias"] = state[f"{i}.bias"].reshape(-1)
        ours[f"backbone.{i + 1}.log_q"] = state[f"{i}.q"]
    last = first_dense + layout.n_dense
    ours["head.weight"] = F.normalize(state[f"{last}.weight"], p=2, dim=1)   # as LinearNormalized.forward
    ours["head.bias"] = state[f"{last}.bias"]
    return ours


def _natural(key: str) -> list:
    """Sort key putting ``model.3.q`` before ``model.10.q``."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", key)]


def load(reader: SpecReader) -> LoadedModel:
    """Load an SLL authors' checkpoint (see the module doc); keys are mapped strictly.

    Raises :class:`~bench.models.loaded.ModelSpecError` for a bad key, an unknown dataset or size, an
    unreadable file, or a state dict whose keys or shapes do not match the layout (all listed).
    """
    reader.check_keys(KEYS)
    path = reader.path("checkpoint", required=True)
    raw_dataset = reader.string("dataset", required=True)
    assert path is not None and raw_dataset is not None
    dataset = raw_dataset.strip().lower().replace("_", "-")
    if dataset not in SLL_DATASETS:
        raise reader.error("dataset", f"the SLL authors' models are for {', '.join(SLL_DATASETS)}, not {raw_dataset!r}")
    layout, size = _layout(reader)
    payload = load_weights_only(path, reader)
    state = state_dict_of(payload, reader, path, ("model_state_dict",))

    for prefix in ("module.model.model.", "model.model."):
        if all(k.startswith(prefix) for k in state):
            break
    else:
        strays = sorted(k for k in state if not k.startswith("module.model.model."))
        raise reader.error("checkpoint", f"{path}: keys are not those of DataParallel(NormalizedModel("
                                         f"LipschitzNetwork)) ('module.model.model.*'): {strays[:8]}")
    expected = authors_state_shapes(layout, dataset, prefix)
    found = {k: tuple(state[k].shape) for k in sorted(state, key=_natural)}
    mismatch = mismatch_message(path, f"the {size or 'given'} layout on {dataset} (docs/model-formats.md)",
                                expected, found)
    if mismatch:
        raise reader.error("checkpoint", mismatch)
    check_dense(state, lambda message: reader.error("checkpoint", f"{path}: {message}"))
    bad = sorted(k for k, v in state.items() if not bool(torch.isfinite(v).all()))
    if bad:
        raise reader.error("checkpoint", f"{path} holds non-finite values in {bad[:8]}")

    backbone, head = _build(layout, dataset)
    network = split_network(backbone, head)
    casts = load_state_strict(network, _convert({k[len(prefix):]: v for k, v in state.items()}, layout, dataset),
                              reader, path)
    network.eval()
    norm = backbone[0]
    assert isinstance(norm, InputNormalization)
    data = SLL_DATASETS[dataset]
    details = {"checkpoint": str(path), "dataset": dataset, "size": size,
               "layout": asdict(layout), "mean": list(data.mean),
               "epoch": payload.get("epoch") if isinstance(payload.get("epoch"), int) else None,
               "global_step": payload.get("global_step") if isinstance(payload.get("global_step"), int) else None}
    if casts:
        details["weights_cast"] = casts_record(casts)
    return LoadedModel(name=reader.name, network=network, backbone=backbone, head=head,
                       lipschitz=norm.lipschitz * 1.0,       # shift (std 1) then 1-Lipschitz SLL layers
                       input_shape=(3, data.side, data.side), num_classes=data.num_classes, format="sll",
                       fingerprint=file_fingerprint(path), details=details)
