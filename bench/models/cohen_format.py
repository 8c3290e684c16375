"""``format = "cohen"``: the ``checkpoint.pth.tar`` files of Cohen et al. (2019, locuslab/smoothing) and
Salman et al. (2019, Hadisalman/smoothing-adversarial).

The file is ``{'epoch', 'arch', 'state_dict', 'optimizer'}``; the network was
``Sequential(NormalizeLayer, model)`` whose normalisation layer holds no state, so the keys start at ``1.``
(``1.module.`` for ResNet-50, saved inside ``DataParallel``). Architectures (``arch``):

============================  ===============================  =============  =======  ========================
arch                          network                          input          classes  default normalisation
============================  ===============================  =============  =======  ========================
``cifar_resnet20``            CIFAR ResNet-20                  3 x 32 x 32    fc rows  CIFAR-10 mean / std
``cifar_resnet110``           CIFAR ResNet-110                 3 x 32 x 32    fc rows  CIFAR-10 mean / std
``imagenet32_resnet110``      CIFAR ResNet-110                 3 x 32 x 32    fc rows  CIFAR-10 mean / std (*)
``resnet50``                  torchvision ResNet-50            3 x 224 x 224  fc rows  ImageNet mean / std
============================  ===============================  =============  =======  ========================

(*) Salman et al.'s ``get_normalize_layer("imagenet32")`` returns the CIFAR-10 statistics (their
``code/datasets.py``, commit cff781d5); their centring layer has no ImageNet32 case at all.

Spec keys: ``checkpoint`` (file, required); ``normalization`` in ``standardize`` (default: (x - mean) / std),
``center`` (x - mean) or ``none``; ``mean`` / ``std`` (3 numbers each) to override the table's statistics
(the file cannot tell which layer a model was trained with: Salman et al.'s issue #3); ``arch`` (must equal
the file's, or names it when the file has none). No Lipschitz split: these models are certified by Cohen RS.
The fingerprint is the SHA-256 of the checkpoint file.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models import resnet50

from .cifar_resnet import CifarResNet
from .loaded import (
    LoadedModel,
    SpecReader,
    casts_record,
    file_fingerprint,
    load_state_strict,
    load_weights_only,
    state_dict_of,
)
from .normalization import InputNormalization

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: arch -> (CIFAR ResNet depth or 0 for torchvision's ResNet-50, input shape, default classes, mean, std)
ARCHS: dict[str, tuple[int, tuple[int, int, int], int, tuple[float, ...], tuple[float, ...]]] = {
    "cifar_resnet20": (20, (3, 32, 32), 10, CIFAR10_MEAN, CIFAR10_STD),
    "cifar_resnet110": (110, (3, 32, 32), 10, CIFAR10_MEAN, CIFAR10_STD),
    "imagenet32_resnet110": (110, (3, 32, 32), 1000, CIFAR10_MEAN, CIFAR10_STD),
    "resnet50": (0, (3, 224, 224), 1000, IMAGENET_MEAN, IMAGENET_STD),
}
NORMALIZATIONS = ("standardize", "center", "none")
KEYS = ("checkpoint", "normalization", "mean", "std", "arch")


def build_classifier(arch: str, num_classes: int | None = None) -> tuple[nn.Module, nn.Module]:
    """``(saved, classifier)`` of ``arch`` (a key of :data:`ARCHS`) with random weights: ``saved`` is the module
    whose state dict the file holds under ``1.`` (ResNet-50 inside a ``module`` wrapper, DataParallel's names),
    ``classifier`` the network itself ([B, 3, H, W] standardised inputs -> [B, classes] logits).

    ``num_classes`` defaults to the arch's. Works under ``torch.device("meta")``. ``KeyError`` for another arch.
    """
    depth, _, default_classes, _, _ = ARCHS[arch]
    classes = num_classes or default_classes
    if depth:
        model = CifarResNet(depth, classes)
        return model, model
    inner = resnet50(weights=None, num_classes=classes)
    # DataParallel's parameter names (``module.``) without DataParallel (which would move it to a GPU)
    return nn.Sequential(OrderedDict([("module", inner)])), inner


def state_shapes(arch: str, num_classes: int | None = None) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of the file's ``state_dict`` for ``arch`` (built on the meta device: no memory)."""
    with torch.device("meta"):
        saved, _ = build_classifier(arch, num_classes)
    return {f"1.{key}": tuple(value.shape) for key, value in saved.state_dict().items()}


def _num_classes(state: dict, fc_key: str, default: int) -> int:
    weight = state.get(fc_key)
    return int(weight.shape[0]) if weight is not None and weight.dim() == 2 and weight.shape[0] > 0 else default


def load(reader: SpecReader) -> LoadedModel:
    """Build the network named by the file's ``arch`` and load its weights strictly (see the module doc).

    Raises :class:`~bench.models.loaded.ModelSpecError` for a bad key, an unknown or mismatched ``arch``,
    an unreadable file, or a state dict that does not fit the architecture.
    """
    reader.check_keys(KEYS)
    path = reader.path("checkpoint", required=True)
    normalization = reader.string("normalization", choices=NORMALIZATIONS, default="standardize")
    mean_override, std_override = reader.numbers("mean", 3), reader.numbers("std", 3, positive=True)
    arch_key = reader.string("arch", choices=tuple(ARCHS))
    assert path is not None and normalization is not None
    if std_override is not None and normalization != "standardize":
        raise reader.error("std", f"is only used with normalization = 'standardize', not {normalization!r}")
    if mean_override is not None and normalization == "none":
        raise reader.error("mean", "is not used with normalization = 'none'")

    payload = load_weights_only(path, reader)
    file_arch = payload.get("arch") if isinstance(payload, dict) else None
    if file_arch is not None and not isinstance(file_arch, str):
        raise reader.error("checkpoint", f"{path}: 'arch' is {file_arch!r}, not a string")
    if file_arch is not None and arch_key is not None and file_arch != arch_key:
        raise reader.error("arch", f"{arch_key!r} does not match the checkpoint's arch {file_arch!r}")
    arch = file_arch or arch_key
    if arch is None:
        raise reader.error("arch", f"{path} records no 'arch': give one of {', '.join(ARCHS)}")
    if arch not in ARCHS:
        raise reader.error("checkpoint", f"{path}: unknown arch {arch!r}; supported: {', '.join(ARCHS)}")
    state = state_dict_of(payload, reader, path, ("state_dict",))

    depth, input_shape, default_classes, mean, std = ARCHS[arch]
    num_classes = _num_classes(state, "1.fc.weight" if depth else "1.module.fc.weight", default_classes)
    model, inner = build_classifier(arch, num_classes)
    mean = mean_override or mean
    std = std_override or std
    norm: nn.Module
    if normalization == "standardize":
        norm = InputNormalization(mean, std)
    elif normalization == "center":
        norm = InputNormalization(mean, (1.0, 1.0, 1.0))
    else:
        norm = nn.Identity()
    # Load into Sequential(norm, model) so that the keys are exactly the file's ``1.*`` / ``1.module.*``
    casts = load_state_strict(nn.Sequential(norm, model), state, reader, path)
    network = nn.Sequential(norm, inner).eval()
    details = {"checkpoint": str(path), "arch": arch, "normalization": normalization,
               "mean": list(mean) if normalization != "none" else None,
               "std": list(std) if normalization == "standardize" else None,
               "epoch": payload.get("epoch") if isinstance(payload, dict) and isinstance(payload.get("epoch"), int)
               else None}
    if casts:
        details["weights_cast"] = casts_record(casts)
    return LoadedModel(name=reader.name, network=network, backbone=None, head=None, lipschitz=None,
                       input_shape=input_shape, num_classes=num_classes, format="cohen",
                       fingerprint=file_fingerprint(path), details=details)
