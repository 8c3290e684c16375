"""l2 attacks used to measure empirical robustness and to audit certificates.

Everything here works on a *classifier* ``model: x -> scores [B, K]`` over inputs ``x`` in ``[0, 1]``
(any shape ``[B, ...]``) and reports results **per example**: each example has its own success flag,
its own adversarial point and the l2 norm of its perturbation. (The public FaRS code counted
``argmax(output)[0] == target`` for a whole batch; nothing here aggregates before the caller does.)

* :func:`l2_pgd` - projected gradient ascent in the l2 ball of radius ``eps`` (one value or one per
  example), untargeted (margin loss ``max_{j != y} s_j - s_y``) or targeted (``s_t - s_y``), with the
  step size proportional to the radius (``step_scale * eps / steps``), a random start uniform in the
  ball, iterates clipped to ``[0, 1]``, and *best-iterate tracking*: every iterate, the starting point
  included, is checked, so an adversarial point found mid-way is kept even if later steps leave it.
* :func:`rank_targets` - runner-up classes ranked by their linearised distance
  ``(s_y - s_j) / ||grad(s_y - s_j)||`` (exact for a linear model).
* :func:`pgd_attack` - the full attack: clean check, then for every restart the untargeted run and one
  targeted run per runner-up class; an example is broken as soon as any run finds an adversarial.
* :func:`min_norm_attack` - a minimum-norm search (decoupled direction and norm, after Rony et al.
  2019), untargeted and towards the closest runner-ups: the radius of each example grows while no
  adversarial is found and shrinks once one is, and the smallest adversarial perturbation seen is
  returned. Its distances are upper bounds on each
  example's true distance to the decision boundary.
* :func:`smoothed_pgd` - PGD on a randomized-smoothing classifier (SmoothAdv, Salman et al. 2019):
  ascent on ``-log E_noise[softmax(f(encode(x) + sigma * noise))]_y`` with fresh noise at every step.

What an attack can and cannot say: a success is a concrete adversarial point (a proof that the
example is not robust at that radius); a failure proves nothing. Empirical robust accuracy is
therefore an *upper* bound on true robust accuracy, and any sound certificate's accuracy must lie
below it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from smoothing.checks import evaluating

Classifier = Callable[[torch.Tensor], torch.Tensor]

__all__ = [
    "AttackResult",
    "PGDConfig",
    "Classifier",
    "l2_pgd",
    "rank_targets",
    "linearised_distances",
    "pgd_attack",
    "min_norm_attack",
    "smoothed_pgd",
    "flat_norm",
    "is_adversarial",
]


@dataclass(frozen=True)
class PGDConfig:
    """Settings of :func:`pgd_attack`.

    Attributes:
        steps: gradient steps per run.
        restarts: runs per attack kind; run 0 starts at x itself when ``zero_start_first``, every other
            run starts at a point drawn uniformly in the l2 ball (then clipped to [0, 1]).
        targets: runner-up classes attacked with a targeted run each (ranked by :func:`rank_targets`);
            ``None`` means every other class.
        step_scale: step size = ``step_scale * eps / steps`` (2.5: the path can cross the ball 1.25 times).
        zero_start_first: start the first restart at x (a deterministic start), the others at random.
        seed: seed of the random starts (the attack is deterministic given it).
    """

    steps: int = 50
    restarts: int = 2
    targets: int | None = 2
    step_scale: float = 2.5
    zero_start_first: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.restarts < 1:
            raise ValueError("steps and restarts must be >= 1")
        if self.targets is not None and self.targets < 0:
            raise ValueError("targets must be >= 0 or None (all classes)")
        if not self.step_scale > 0:
            raise ValueError("step_scale must be > 0")

    def describe(self) -> str:
        targets = "all" if self.targets is None else str(self.targets)
        return (f"l2-PGD {self.steps} steps, {self.restarts} restarts, untargeted + {targets} runner-up targets, "
                f"step {self.step_scale:g}*eps/steps")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AttackResult:
    """Per-example outcome of an attack on a batch of B inputs.

    Attributes:
        success: bool [B], an adversarial point (prediction != y) was found within the radius.
        adversarial: [B, ...] the adversarial point of smallest perturbation found; where none was found,
            the last iterate (:func:`l2_pgd`, :func:`min_norm_attack`) or x itself (:func:`pgd_attack`).
        distance: float64 [B], l2 norm of ``adversarial - x`` where ``success``, ``inf`` elsewhere
            (0 for an example the model already gets wrong).
    """

    success: torch.Tensor
    adversarial: torch.Tensor
    distance: torch.Tensor

    def __len__(self) -> int:
        return int(self.success.shape[0])

    def record(self, rows: torch.Tensor, point: torch.Tensor, delta: torch.Tensor, hit: torch.Tensor) -> None:
        """Record the iterates ``point = x[rows] + delta`` that are adversarial (``hit``): every hit row
        succeeds, and its adversarial point is replaced where this one is closer to x."""
        if not bool(hit.any()):
            return
        dist = flat_norm(delta.detach()).double()
        idx = rows[hit]
        better = dist[hit] < self.distance[idx]
        self.success[idx] = True
        self.distance[idx[better]] = dist[hit][better]
        self.adversarial[idx[better]] = point.detach()[hit][better]

    def merge(self, rows: torch.Tensor, other: AttackResult) -> None:
        """Fold the result of an attack on the subset ``rows`` into this one, keeping the shorter adversarial."""
        better = other.success & (other.distance < self.distance[rows])
        keep = rows[better]
        self.success[keep] = True
        self.distance[keep] = other.distance[better]
        self.adversarial[keep] = other.adversarial[better]


def flat_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-example l2 norm [B] of a batch [B, ...]."""
    return t.flatten(1).norm(dim=1)


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *[1] * (like.dim() - 1))


def is_adversarial(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """bool [B]: the classifier's answer ``argmax(scores)`` differs from ``y``."""
    return scores.argmax(dim=1) != y


def _objective(scores: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """The quantity each run maximises: s_t - s_y (targeted) or max_{j != y} s_j - s_y (untargeted)."""
    true = scores.gather(1, y[:, None])[:, 0]
    if target is not None:
        return scores.gather(1, target[:, None])[:, 0] - true
    others = scores.scatter(1, y[:, None], float("-inf"))
    return others.max(dim=1).values - true


def _as_radius(eps: float | torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
    eps_t = torch.as_tensor(eps, dtype=like.dtype, device=like.device)
    if eps_t.dim() == 0:
        eps_t = eps_t.expand(batch)
    if eps_t.shape != (batch,):
        raise ValueError(f"eps must be a number or one value per example ([{batch}]), got shape {tuple(eps_t.shape)}")
    if bool((eps_t < 0).any()) or not bool(torch.isfinite(eps_t).all()):
        raise ValueError("eps must be finite and >= 0")
    return eps_t.clone()


def _check_batch(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.dim() < 2 or y.shape != (x.shape[0],):
        raise ValueError(f"need inputs [B, ...] and labels [B], got {tuple(x.shape)} and {tuple(y.shape)}")
    if bool((x < 0).any()) or bool((x > 1).any()):
        raise ValueError("inputs must lie in [0, 1]")


def _random_in_ball(x: torch.Tensor, eps: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Uniform points in the l2 balls of radii ``eps`` around 0 (direction Gaussian, radius eps * U^(1/d))."""
    direction = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    direction = direction / _view(flat_norm(direction).clamp_min(1e-30), x)
    d = x[0].numel()
    radius = eps * torch.rand(x.shape[0], generator=generator, dtype=x.dtype).to(x.device) ** (1.0 / d)
    return direction * _view(radius, x)


def _project(x: torch.Tensor, delta: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Project ``delta`` onto the l2 ball of radius eps, then clip x + delta to [0, 1].

    Clipping after the projection keeps the point in the ball: each coordinate of the clipped
    perturbation is no larger in magnitude than before (x itself lies in [0, 1]).
    """
    norm = flat_norm(delta)
    factor = torch.where(norm > eps, eps / norm.clamp_min(1e-30), torch.ones_like(norm))
    return (x + delta * _view(factor, x)).clamp(0.0, 1.0) - x


def l2_pgd(model: Classifier, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor, *, steps: int = 50,
           step_scale: float = 2.5, target: torch.Tensor | None = None, random_start: bool = True,
           generator: torch.Generator | None = None, stop_early: bool = True) -> AttackResult:
    """One run of l2 projected gradient ascent from ``x`` ([B, ...] in [0, 1]) against labels ``y``.

    ``eps`` is one radius or one per example; the step is ``step_scale * eps / steps`` along the
    normalised gradient, followed by projection onto the ball and clipping to [0, 1]. Every iterate
    (the start included, and the last one) is checked; an example succeeds as soon as one iterate is
    classified differently from ``y``, and the adversarial iterate of smallest norm is kept. With
    ``stop_early`` an example stops being updated once it succeeded (saves work; success is final).
    ``target`` (int64 [B]) switches to the targeted objective s_t - s_y. The model is called in eval
    mode when it is an ``nn.Module``; its parameters receive no gradient.
    """
    _check_batch(x, y)
    if steps < 1:
        raise ValueError("steps must be >= 1")
    x = x.detach()
    eps_t = _as_radius(eps, x.shape[0], x)
    generator = generator or torch.Generator().manual_seed(0)
    result = AttackResult(torch.zeros(x.shape[0], dtype=torch.bool, device=x.device), x.clone(),
                          torch.full((x.shape[0],), math.inf, dtype=torch.float64, device=x.device))
    delta = _random_in_ball(x, eps_t, generator) if random_start else torch.zeros_like(x)
    delta = _project(x, delta, eps_t)
    active = torch.arange(x.shape[0], device=x.device)
    alpha = step_scale * eps_t / steps
    modules = (model,) if isinstance(model, nn.Module) else ()
    with evaluating(*modules), torch.enable_grad():
        for step in range(steps + 1):
            if active.numel() == 0:
                break
            xa, ya, da = x[active], y[active], delta[active].requires_grad_(True)
            point = xa + da
            scores = model(point)
            hit = is_adversarial(scores.detach(), ya)
            result.record(active, point, da, hit)
            if step == steps:
                never = ~result.success[active]
                result.adversarial[active[never]] = point.detach()[never]
                break
            objective = _objective(scores, ya, None if target is None else target[active])
            (grad,) = torch.autograd.grad(objective.sum(), da)
            direction = grad / _view(flat_norm(grad).clamp_min(1e-30), grad)
            new = _project(xa, da.detach() + direction * _view(alpha[active], grad), eps_t[active])
            delta[active] = new
            if stop_early:
                active = active[~hit]
    return result


def _scores(model: Classifier, x: torch.Tensor) -> torch.Tensor:
    modules = (model,) if isinstance(model, nn.Module) else ()
    with evaluating(*modules), torch.no_grad():
        return model(x)


def linearised_distances(model: Classifier, x: torch.Tensor, y: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """float64 [B, K]: ``(s_y - s_j) / ||grad_x (s_y - s_j)||`` for every class j (inf for j = y).

    The distance to class j's half-space in the linear approximation at x (DeepFool's estimate;
    exact for a linear classifier). K backward passes.
    """
    _check_batch(x, y)
    modules = (model,) if isinstance(model, nn.Module) else ()
    parts = []
    with evaluating(*modules), torch.enable_grad():
        for start in range(0, x.shape[0], chunk):
            xs, ys = x[start:start + chunk].detach().clone().requires_grad_(True), y[start:start + chunk]
            scores = model(xs)
            num_classes = scores.shape[1]
            true = scores.gather(1, ys[:, None])[:, 0]
            estimate = torch.empty(xs.shape[0], num_classes, dtype=torch.float64, device=x.device)
            for j in range(num_classes):
                gap = true - scores[:, j]
                (grad,) = torch.autograd.grad(gap.sum(), xs, retain_graph=j < num_classes - 1)
                estimate[:, j] = (gap.detach() / flat_norm(grad).clamp_min(1e-30)).double()
            estimate.scatter_(1, ys[:, None], math.inf)
            parts.append(estimate)
    return torch.cat(parts)


def rank_targets(model: Classifier, x: torch.Tensor, y: torch.Tensor, k: int | None = None,
                 chunk: int = 256) -> torch.Tensor:
    """Runner-up classes of each example, int64 [B, k], closest first by :func:`linearised_distances`.

    ``k = None`` returns all K - 1 classes other than ``y``.
    """
    estimate = linearised_distances(model, x, y, chunk)
    count = estimate.shape[1] - 1 if k is None else min(k, estimate.shape[1] - 1)
    return estimate.argsort(dim=1)[:, :count]


def pgd_attack(model: Classifier, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor,
               config: PGDConfig = PGDConfig(), targets: torch.Tensor | None = None) -> AttackResult:
    """The full l2 attack at radius ``eps``: all restarts of the untargeted run and of one targeted run
    per runner-up class, per example.

    An example is attacked only until one run succeeds (success is final, and a later run cannot
    undo it). Examples already misclassified at x succeed with distance 0. ``targets`` ([B, k]) may be
    given to reuse a ranking from :func:`rank_targets`; otherwise the top ``config.targets`` are used.
    Deterministic given ``config.seed``.
    """
    _check_batch(x, y)
    x = x.detach()
    eps_t = _as_radius(eps, x.shape[0], x)
    scores = _scores(model, x)
    result = AttackResult(is_adversarial(scores, y), x.clone(),
                          torch.full((x.shape[0],), math.inf, dtype=torch.float64, device=x.device))
    result.distance[result.success] = 0.0
    pending = ~result.success & (eps_t > 0)
    if not bool(pending.any()):
        return result
    if targets is None and config.targets != 0:
        rows = pending.nonzero()[:, 0]
        ranked = rank_targets(model, x[rows], y[rows], config.targets)
        targets = torch.zeros(x.shape[0], ranked.shape[1], dtype=torch.int64, device=x.device)
        targets[rows] = ranked
    kinds: list[int | None] = [None] + list(range(0 if targets is None else targets.shape[1]))
    generator = torch.Generator().manual_seed(config.seed)
    for restart in range(config.restarts):
        random_start = not (config.zero_start_first and restart == 0)
        for kind in kinds:
            rows = (~result.success & (eps_t > 0)).nonzero()[:, 0]
            if rows.numel() == 0:
                return result
            target: torch.Tensor | None = None
            if kind is not None:
                assert targets is not None  # kinds holds target columns only when there are targets
                target = targets[rows, kind]
            run = l2_pgd(model, x[rows], y[rows], eps_t[rows], steps=config.steps, step_scale=config.step_scale,
                         target=target, random_start=random_start, generator=generator)
            result.merge(rows, run)
    return result


def min_norm_attack(model: Classifier, x: torch.Tensor, y: torch.Tensor, *, steps: int = 100,
                    targets: int | None = 1, gamma: tuple[float, float] = (0.1, 0.002),
                    step: tuple[float, float] = (0.5, 0.005), upper: float | None = None) -> AttackResult:
    """Minimum-norm l2 search for each example (decoupled direction and norm, after Rony et al. 2019).

    One untargeted run and one targeted run per runner-up class (the ``targets`` closest by
    :func:`linearised_distances`; None: all); the smallest adversarial over the runs is kept. In a
    run, each example keeps a radius r and a perturbation on its sphere. At each step the
    perturbation moves along the normalised gradient of the objective (untargeted margin, or
    s_t - s_y) by ``step * r`` (cosine-decayed from ``step[0]`` to ``step[1]``) and is rescaled to
    norm r; r shrinks by the factor (1 - g) while the current point is adversarial and grows by
    (1 + g) while it is not (g cosine-decayed from ``gamma[0]`` to ``gamma[1]``). r starts at the
    linearised distance of the run's class (the closest one for the untargeted run). Inputs are
    clipped to [0, 1]; ``upper`` caps r. Returns per example the smallest adversarial found
    (``distance`` = inf where none; elsewhere an upper bound on the distance to the boundary).
    """
    _check_batch(x, y)
    x = x.detach()
    batch = x.shape[0]
    scores = _scores(model, x)
    result = AttackResult(is_adversarial(scores, y), x.clone(),
                          torch.full((batch,), math.inf, dtype=torch.float64, device=x.device))
    result.distance[result.success] = 0.0
    rows = (~result.success).nonzero()[:, 0]
    if rows.numel() == 0:
        return result
    xs, ys = x[rows], y[rows]
    estimate = linearised_distances(model, xs, ys)
    order = estimate.argsort(dim=1)
    count = 0 if targets == 0 else (estimate.shape[1] - 1 if targets is None else min(targets, estimate.shape[1] - 1))
    runs: list[torch.Tensor | None] = [None] + [order[:, k] for k in range(count)]
    for target in runs:
        j = order[:, 0] if target is None else target
        init = estimate.gather(1, j[:, None])[:, 0].to(x.dtype)
        _min_norm_run(model, xs, ys, rows, target, init, steps, gamma, step, upper, result)
    return result


def _min_norm_run(model: Classifier, xs: torch.Tensor, ys: torch.Tensor, rows: torch.Tensor,
                  target: torch.Tensor | None, radius: torch.Tensor, steps: int, gamma: tuple[float, float],
                  step: tuple[float, float], upper: float | None, result: AttackResult) -> None:
    radius = radius.clamp_min(1e-4)
    if upper is not None:
        radius = radius.clamp_max(upper)
    delta = torch.zeros_like(xs)
    modules = (model,) if isinstance(model, nn.Module) else ()
    with evaluating(*modules), torch.enable_grad():
        for k in range(steps + 1):
            phase = 0.5 * (1 + math.cos(math.pi * k / max(steps, 1)))
            g = gamma[1] + (gamma[0] - gamma[1]) * phase
            a = step[1] + (step[0] - step[1]) * phase
            d = delta.detach().requires_grad_(True)
            point = xs + d
            out = model(point)
            hit = is_adversarial(out.detach(), ys)
            result.record(rows, point, d, hit)
            if k == steps:
                break
            (grad,) = torch.autograd.grad(_objective(out, ys, target).sum(), d)
            direction = grad / _view(flat_norm(grad).clamp_min(1e-30), grad)
            radius = torch.where(hit, radius * (1 - g), radius * (1 + g))
            if upper is not None:
                radius = radius.clamp_max(upper)
            moved = d.detach() + direction * _view(a * radius, grad)
            norm = flat_norm(moved).clamp_min(1e-30)
            delta = (xs + moved * _view(radius / norm, moved)).clamp(0.0, 1.0) - xs


def smoothed_pgd(encode: Classifier, classify: Classifier, x: torch.Tensor, y: torch.Tensor,
                 eps: float | torch.Tensor, sigma: float, *, samples: int = 16, steps: int = 20,
                 step_scale: float = 2.5, seed: int = 0, modules: Sequence[nn.Module] = ()) -> torch.Tensor:
    """SmoothAdv-style PGD on the smoothed classifier g(x) = argmax_c P[classify(encode(x) + sigma N) = c].

    Ascends ``-log(mean_i softmax(classify(encode(x') + sigma * n_i))_y)`` over ``samples`` fresh
    Gaussian draws per step (Salman et al. 2019), in the l2 ball of radius ``eps`` around x (clipped to
    [0, 1]), starting at x, step ``step_scale * eps / steps``. ``encode`` is the identity for Cohen RS
    (noise on pixels) and the backbone for FaRS Monte Carlo (noise on embeddings). Returns the last
    iterate [B, ...]; whether it changed g has to be estimated with fresh samples by the caller, since
    g cannot be evaluated exactly.
    """
    _check_batch(x, y)
    x = x.detach()
    eps_t = _as_radius(eps, x.shape[0], x)
    generator = torch.Generator().manual_seed(seed)
    alpha = step_scale * eps_t / steps
    delta = torch.zeros_like(x)
    with evaluating(*modules), torch.enable_grad():
        for _ in range(steps):
            d = delta.detach().requires_grad_(True)
            centers = encode(x + d)
            noise = torch.randn((samples, *centers.shape), generator=generator, dtype=centers.dtype).to(centers.device)
            noisy = (centers.unsqueeze(0) + sigma * noise).flatten(0, 1)
            probs = torch.softmax(classify(noisy), dim=1).view(samples, x.shape[0], -1).mean(dim=0)
            loss = -torch.log(probs.gather(1, y[:, None])[:, 0].clamp_min(1e-12))
            (grad,) = torch.autograd.grad(loss.sum(), d)
            direction = grad / _view(flat_norm(grad).clamp_min(1e-30), grad)
            delta = _project(x, d.detach() + direction * _view(alpha, grad), eps_t)
    return (x + delta).detach()
