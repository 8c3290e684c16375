"""``format = "torch"``: any ``nn.Module`` of the user's, built by a factory function.

Spec keys:

* ``factory`` (required): ``"package.module:function"`` (the part after ``:`` may be dotted), imported and
  called with ``kwargs`` (a table, default empty); it must return an ``nn.Module`` mapping [B, C, H, W]
  float pixels in [0, 1] to logits [B, num_classes] (normalisation included);
* ``checkpoint`` (optional): a state dict file (or a dict holding one under ``state_dict`` /
  ``model_state_dict``), loaded weights-only and strictly;
* ``input_shape`` (required, [C, H, W]); ``num_classes`` (optional: inferred from one forward of two random
  inputs, and checked against it when given);
* for FaRS methods: ``backbone`` and ``head`` (dotted attribute names of the module, both or neither) and
  ``lipschitz``, the backbone's declared l2 constant in pixel units (required with them, refused without).

With a split, ``head(backbone(x))`` must reproduce ``network(x)`` on the probe inputs, and the declared
constant is audited at load time (:func:`fars.audit.audit_lipschitz`, small budget: :data:`AUDIT_INPUTS`
random inputs in [0, 1], :data:`AUDIT_ITERATIONS` power iterations and pair-ascent steps, float64): the
model is refused when the audit's lower bound exceeds the constant by more than ``AUDIT_TOLERANCE`` (relative).
The audit can only catch a constant that is too small; it never proves one.

An experiment file that names a factory is code: loading it imports the module and calls the function, as
running a script would (one line on stderr names both first). Read such a file as you would a script;
commands that read a results folder never rebuild these models from what it records.

The fingerprint is the SHA-256 of the checkpoint file, or without one of the built module's state dict
(:func:`~bench.models.loaded.state_fingerprint`).
"""

from __future__ import annotations

import importlib
import operator
import sys
from typing import Any

import torch
from torch import nn

from fars.audit import audit_lipschitz

from .checkpoints import AUDIT_TOLERANCE
from .loaded import (
    LoadedModel,
    SpecReader,
    casts_record,
    file_fingerprint,
    load_state_strict,
    load_weights_only,
    state_dict_of,
    state_fingerprint,
)

KEYS = ("factory", "kwargs", "checkpoint", "input_shape", "num_classes", "backbone", "head", "lipschitz")
AUDIT_INPUTS = 4
AUDIT_ITERATIONS = 10
PROBE_SEED = 0
#: max |network(x) - head(backbone(x))| allowed, relative to max(1, max |logit|)
SPLIT_TOLERANCE = 1e-5


def _factory(reader: SpecReader) -> Any:
    spec = reader.string("factory", required=True)
    assert spec is not None
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise reader.error("factory", f"must read 'package.module:function', got {spec!r}")
    print(f"{reader.name}: format \"torch\": importing {module_name!r} and calling {attr!r} "
          f"(factory = {spec!r}: the experiment file runs this code)", file=sys.stderr, flush=True)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise reader.error("factory", f"cannot import {module_name!r}: {err}") from None
    try:
        function = operator.attrgetter(attr)(module)
    except AttributeError:
        raise reader.error("factory", f"{module_name!r} has no attribute {attr!r}") from None
    if not callable(function):
        raise reader.error("factory", f"{spec!r} is not callable")
    return function


def _attribute(network: nn.Module, reader: SpecReader, key: str) -> nn.Module:
    dotted = reader.string(key, required=True)
    assert dotted is not None
    try:
        module = operator.attrgetter(dotted)(network)
    except AttributeError:
        raise reader.error(key, f"the model has no attribute {dotted!r}") from None
    if not isinstance(module, nn.Module):
        raise reader.error(key, f"{dotted!r} is a {type(module).__name__}, not an nn.Module")
    return module


def load(reader: SpecReader) -> LoadedModel:
    """Build, load, probe and (with a split) audit a user's model; see the module doc. Prints which factory
    it imports and calls (stderr) before doing so.

    Raises :class:`~bench.models.loaded.ModelSpecError` for a bad key, a factory that cannot be imported or
    does not return an ``nn.Module``, a checkpoint that does not fit, logits of the wrong shape, a split that
    does not reproduce the network, or a declared Lipschitz constant below the audit's lower bound.
    """
    reader.check_keys(KEYS)
    function = _factory(reader)
    kwargs = reader.table("kwargs") or {}
    path = reader.path("checkpoint")
    input_shape = reader.shape("input_shape", required=True)
    declared_classes = reader.integer("num_classes")
    split = reader.has("backbone") or reader.has("head")
    lipschitz = reader.number("lipschitz")
    assert input_shape is not None
    if split and lipschitz is None:
        raise reader.error("lipschitz", "is required with 'backbone' and 'head' (the backbone's l2 constant)")
    if not split and lipschitz is not None:
        raise reader.error("lipschitz", "needs 'backbone' and 'head' (the constant is the backbone's)")

    try:
        network = function(**kwargs)
    except Exception as err:
        raise reader.error("factory", f"calling it with {kwargs} failed: {type(err).__name__}: {err}") from None
    if not isinstance(network, nn.Module):
        raise reader.error("factory", f"returned a {type(network).__name__}, not an nn.Module")
    casts: dict[str, str] = {}
    if path is not None:
        payload = load_weights_only(path, reader)
        casts = load_state_strict(network, state_dict_of(payload, reader, path, ("state_dict", "model_state_dict")),
                                  reader, path)
    network.eval()

    generator = torch.Generator().manual_seed(PROBE_SEED)
    probe = torch.rand(2, *input_shape, generator=generator)
    try:
        with torch.no_grad():
            logits = network(probe)
    except Exception as err:
        raise reader.error("input_shape", f"a forward of inputs {[2, *input_shape]} failed: "
                                          f"{type(err).__name__}: {err}") from None
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise reader.error("factory", f"the model must return logits [B, num_classes], got {shape}")
    num_classes = int(logits.shape[1])
    if declared_classes is not None and declared_classes != num_classes:
        raise reader.error("num_classes", f"is {declared_classes}, the model returns {num_classes} logits")
    if not bool(torch.isfinite(logits).all()):
        raise reader.error("factory", "the model returns non-finite logits on random inputs")

    backbone = head = None
    details: dict[str, Any] = {"factory": reader.spec["factory"], "kwargs": kwargs,
                               "checkpoint": str(path) if path is not None else None}
    if casts:
        details["weights_cast"] = casts_record(casts)
    if split:
        backbone, head = _attribute(network, reader, "backbone"), _attribute(network, reader, "head")
        assert lipschitz is not None
        try:
            with torch.no_grad():
                composed = head(backbone(probe))
        except Exception as err:
            raise reader.error("head", f"head(backbone(x)) fails: {type(err).__name__}: {err}") from None
        scale = max(1.0, float(logits.abs().max()))
        if not isinstance(composed, torch.Tensor) or composed.shape != logits.shape or \
                float((composed - logits).abs().max()) > SPLIT_TOLERANCE * scale:
            raise reader.error("head", "head(backbone(x)) does not reproduce the model's logits: the split "
                                       f"{reader.spec.get('backbone')!r} -> {reader.spec.get('head')!r} "
                                       "is not the network")
        inputs = torch.rand(AUDIT_INPUTS, *input_shape, generator=generator)
        try:
            audit = audit_lipschitz(backbone, inputs, power_iterations=AUDIT_ITERATIONS,
                                    pair_steps=AUDIT_ITERATIONS, seed=PROBE_SEED)
        except Exception as err:     # e.g. a backbone that cannot run in float64 or under forward-mode autograd
            raise reader.error("backbone", f"the Lipschitz audit of the backbone could not run: "
                                           f"{type(err).__name__}: {err}") from None
        if audit.lower_bound > lipschitz * (1 + AUDIT_TOLERANCE):
            raise reader.error("lipschitz", f"declared {lipschitz} but the audit found a lower bound of "
                                            f"{audit.lower_bound:.6f}: certificates would be unsound")
        details["audit"] = audit.to_dict()
    fingerprint = file_fingerprint(path) if path is not None else state_fingerprint(network)
    return LoadedModel(name=reader.name, network=network, backbone=backbone, head=head, lipschitz=lipschitz,
                       input_shape=input_shape, num_classes=num_classes, format="torch", fingerprint=fingerprint,
                       details=details)
