"""``format = "fars-bench"``: this project's checkpoints, as written by ``python -m bench.train``.

Spec keys: ``checkpoint`` (the checkpoint folder, required) and exactly one of

* ``head`` (one of :data:`~bench.models.networks.HEAD_KINDS`): the SLL backbone ``sll-backbone`` followed
  by ``head-KIND``; backbone = the SLL backbone (no input normalisation: it reads [0, 1] pixels), its
  constant the sidecar's declared (proven, audited) one;
* ``cnn_sigma`` (a number): the noise-trained CNN ``cnn-noiseS`` with that training noise, no split.

The folder is loaded and validated by :func:`~bench.models.zoo.load_zoo` (sidecar hashes, the head trained
on this backbone, the audit record), whose :class:`~bench.models.checkpoints.CheckpointError` becomes a
:class:`~bench.models.loaded.ModelSpecError` on ``checkpoint``. The fingerprint is the SHA-256 of the CNN's
``.pt`` file, or ``BACKBONE_SHA+HEAD_SHA`` (the two ``.pt`` files' SHA-256, as
:meth:`~bench.models.zoo.ModelZoo.split_model` writes it). A split model's details carry the backbone's
checkpoint name and sidecar Lipschitz record (:func:`~bench.models.zoo.backbone_details`).
"""

from __future__ import annotations

import math

from .checkpoints import CheckpointError
from .loaded import LoadedModel, SpecReader, split_network
from .networks import HEAD_KINDS
from .zoo import backbone_details, load_zoo

KEYS = ("checkpoint", "head", "cnn_sigma")


def load(reader: SpecReader) -> LoadedModel:
    """Load one model of a ``bench.train`` checkpoint folder (see the module doc).

    Raises :class:`~bench.models.loaded.ModelSpecError` for a bad key, a folder that fails validation, or a
    head kind / CNN noise level that the folder does not hold.
    """
    reader.check_keys(KEYS)
    folder = reader.path("checkpoint", required=True, directory=True)
    kind = reader.string("head", choices=HEAD_KINDS)
    sigma = reader.number("cnn_sigma", positive=False)
    assert folder is not None
    if (kind is None) == (sigma is None):
        raise reader.error("head" if kind is not None else None, "give exactly one of 'head' and 'cnn_sigma'")
    try:
        zoo = load_zoo(folder)
    except CheckpointError as err:
        raise reader.error("checkpoint", str(err)) from None
    backbone_meta = zoo.backbone_meta
    if kind is not None:
        if kind not in zoo.heads:
            raise reader.error("head", f"{folder} holds no head-{kind} checkpoint (heads: {sorted(zoo.heads)})")
        head, head_meta = zoo.heads[kind]
        arch = backbone_meta["architecture"]
        network = split_network(zoo.backbone, head).eval()
        return LoadedModel(
            name=reader.name, network=network, backbone=zoo.backbone, head=head, lipschitz=zoo.lipschitz,
            input_shape=(int(arch["in_channels"]), int(arch["image_size"]), int(arch["image_size"])),
            num_classes=int(head_meta["architecture"]["num_classes"]), format="fars-bench",
            fingerprint=f"{backbone_meta['state_sha256']}+{head_meta['state_sha256']}",
            details={"checkpoint": str(folder), "head": kind, "backbone_sha256": backbone_meta["state_sha256"],
                     "head_sha256": head_meta["state_sha256"], "clean_accuracy": head_meta.get("clean_accuracy"),
                     "dataset": backbone_meta.get("dataset"), **backbone_details(backbone_meta)})
    assert sigma is not None
    matches = [s for s in zoo.cnns if math.isclose(s, sigma, rel_tol=1e-9, abs_tol=0.0)]
    if not matches:
        raise reader.error("cnn_sigma", f"{folder} holds no CNN trained at noise {sigma} (noise levels: "
                                        f"{sorted(zoo.cnns)})")
    cnn, cnn_meta = zoo.cnns[matches[0]]
    config = cnn_meta["architecture"]
    return LoadedModel(
        name=reader.name, network=cnn.eval(), backbone=None, head=None, lipschitz=None,
        input_shape=(int(config["in_channels"]), int(config["image_size"]), int(config["image_size"])),
        num_classes=int(config["num_classes"]), format="fars-bench", fingerprint=str(cnn_meta["state_sha256"]),
        details={"checkpoint": str(folder), "cnn_sigma": matches[0], "clean_accuracy": cnn_meta.get("clean_accuracy"),
                 "dataset": cnn_meta.get("dataset")})
