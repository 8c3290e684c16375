"""Cohen et al. (2019) randomized smoothing: Gaussian noise on the whole input."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from smoothing.checks import call_model, module_device, validate_classifier
from smoothing.monte_carlo import MonteCarloCertifier

#: ``precision`` values: the dtype the model's forward runs in under ``torch.autocast`` (None: no autocast;
#: ``tf32`` runs fp32 tensors with TF32 allowed in CUDA matmuls and cuDNN convolutions, no effect on a CPU)
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "tf32": None, "bf16": torch.bfloat16,
                                             "fp16": torch.float16}
#: ``memory_format`` values: the layout of each batch of noisy inputs given to the model
MEMORY_FORMATS: dict[str, torch.memory_format] = {"contiguous": torch.contiguous_format,
                                                  "channels_last": torch.channels_last}


class _tf32:  # noqa: N801 (used like a function: ``with _tf32(): ...``)
    """TF32 allowed in CUDA matmuls and cuDNN convolutions for the block; the previous settings restored after."""

    def __enter__(self) -> None:
        self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    def __exit__(self, *exc) -> None:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


class CohenRS(MonteCarloCertifier):
    """CERTIFY / PREDICT of Cohen et al. with noise N(0, sigma^2 I) added to the input pixels.

    Each certified input costs ``n0 + n`` forward passes of ``model``. Noise is added in [0, 1]
    pixel space, before any normalisation inside ``model``, and is never clipped, so radii are l2
    distances in pixel space. Guarantee (Cohen et al., Theorem 1 with Clopper-Pearson): with
    probability >= 1 - alpha, a non-abstaining prediction is the smoothed classifier's class at every
    point within the returned radius.

    Speed options (off by default; the defaults give the reference results):

    * ``compile=True`` runs the base classifier through ``torch.compile`` (compiled on the first
      batch). Fused kernels round differently from eager ones (logits differ by ~1e-6), so a sample
      whose top two logits are that close can vote differently; certificates are otherwise the same.
    * ``precision="bf16"`` or ``"fp16"`` runs the base classifier's forward under ``torch.autocast``
      (noise is still drawn and added in fp32). This is an explicit opt-in: certification is fp32 by
      default (low precision can break the guarantee, Voracek & Hein 2023), and the harness records
      ``precision`` next to every timing. ``precision="tf32"`` keeps fp32 tensors and allows TF32 (10-bit
      mantissa products) in CUDA matmuls and cuDNN convolutions during the forward (no effect on a CPU).
    * ``memory_format="channels_last"`` gives the model each noisy batch in channels-last layout (4-d
      inputs; the model itself is not changed), which selects other convolution kernels: 1.5-1.9x faster
      on the CPU for the SLL networks, but their sums are taken in another order, so scores differ in the
      last bits (certificates can differ where a vote is that close). An opt-in, like the others.

    ``sequential=True`` with target ``radii`` runs sequential CERTIFY (:mod:`smoothing.monte_carlo`):
    ``n`` is then the cap on estimation samples, and an input stops being sampled once its certificate
    is decided (same 1 - alpha guarantee, from an anytime-valid confidence sequence). ``check_range=False``
    accepts inputs outside [0, 1] (radii are then in the inputs' units).

    Raises (``certify``, ``predict``): TypeError for a model with float16 or bfloat16 weights (convert it with
    ``.float()``; ``precision="bf16"`` is the way to a low-precision forward), and as
    :meth:`MonteCarloCertifier.certify`.
    """

    name = "cohen"

    def __init__(self, model: torch.nn.Module, sigma: float, n0: int = 100, n: int = 100_000,
                 alpha: float = 0.001, batch_size: int = 1000, seed: int = 0, *, compile: bool = False,
                 precision: str = "fp32", sequential: bool = False, radii: Sequence[float] | None = None,
                 check_range: bool = True, memory_format: str = "contiguous") -> None:
        super().__init__(sigma, n0, n, alpha, batch_size, seed, lipschitz=1.0, sequential=sequential, radii=radii,
                         check_range=check_range)
        self.model = validate_classifier(model, "model")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        if memory_format not in MEMORY_FORMATS:
            raise ValueError(f"memory_format must be one of {', '.join(MEMORY_FORMATS)}, got {memory_format!r}")
        self.memory_format = memory_format
        self.compile = bool(compile)
        self._compiled: Callable[..., torch.Tensor] | None = None   # torch.compile's wrapper of the model

    def _modules(self) -> tuple[torch.nn.Module, ...]:
        return (self.model,)

    def _device(self) -> torch.device:
        return module_device(self.model)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _forward_model(self) -> Callable[..., torch.Tensor]:
        if not self.compile:
            return self.model
        if self._compiled is None:
            self._compiled = torch.compile(self.model)
        return self._compiled

    def _classify(self, points: torch.Tensor) -> torch.Tensor:
        model = self._forward_model()
        if self.memory_format != "contiguous" and points.dim() == 4:
            points = points.contiguous(memory_format=MEMORY_FORMATS[self.memory_format])
        if self.precision == "tf32":
            with _tf32():
                return call_model(model, points, "model")
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return call_model(model, points, "model")
        with torch.autocast(points.device.type, dtype=dtype):
            return call_model(model, points, "model").float()
