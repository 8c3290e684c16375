"""The certification methods of the harness: the one list of their names and of what each needs.

Every stage reads its method lists from here (``bench.certify.certifiers`` builds each method's certifier,
``bench.certify.runs`` the runs, ``bench.report`` labels and groups them, ``bench.audit`` attacks the
deterministic ones, ``bench.models.zoo`` picks the methods of each shipped model). Imports nothing from
``bench`` and nothing outside the standard library (the report stage runs without torch).
"""

from __future__ import annotations

from dataclasses import dataclass

#: what a model must offer for a method: its whole network only; a Lipschitz backbone/head split; a split
#: whose head is one ``nn.Linear``; a split whose head is a network of ``nn.Linear`` and ``nn.ReLU`` layers
#: other than one ``nn.Linear`` (:func:`fars.crown.is_relu_head`)
NEEDS = ("network", "split", "linear-head", "relu-head")


@dataclass(frozen=True)
class Method:
    """One certification method.

    ``name``: as written in results files and on the command line; ``sampling``: a Monte Carlo method
    (its runs have a noise level sigma and a failure probability alpha) rather than a deterministic one;
    ``needs``: one of :data:`NEEDS`; ``fars``: a FaRS variant (Table 1 of the paper's tables);
    ``certifies``: what its radius is about, in a few words.
    """

    name: str
    sampling: bool
    needs: str
    fars: bool
    certifies: str

    def __post_init__(self) -> None:
        if self.needs not in NEEDS:
            raise ValueError(f"method {self.name!r}: needs must be one of {NEEDS}, got {self.needs!r}")


#: every method, in run order (the order of the results file)
REGISTRY: tuple[Method, ...] = (
    Method("cohen", True, "network", False, "the smoothed network, noise on the input (Cohen et al. 2019)"),
    Method("fars-mc", True, "split", True, "the smoothed head, noise on the embedding (FaRS Monte Carlo)"),
    Method("fars-closed", False, "linear-head", True, "the linear head's exact margin distance / L"),
    Method("lipschitz-margin", False, "linear-head", False, "margin / (sqrt(2) L ||W||_2) (Tsuzuku et al. 2018)"),
    Method("fars-crown", False, "relu-head", True, "the ReLU head's bound-propagation radius / L (CROWN)"),
)

#: method names, in run order
METHODS: tuple[str, ...] = tuple(m.name for m in REGISTRY)
#: methods that sample (a run of theirs has a noise level)
MONTE_CARLO_METHODS: tuple[str, ...] = tuple(m.name for m in REGISTRY if m.sampling)
#: methods that need no sampling (their cost does not depend on n; their certificates can be attacked directly)
DETERMINISTIC_METHODS: tuple[str, ...] = tuple(m.name for m in REGISTRY if not m.sampling)
#: methods that certify a Lipschitz backbone/head split
SPLIT_METHODS: tuple[str, ...] = tuple(m.name for m in REGISTRY if m.needs != "network")
#: the FaRS variants (Table 1)
FARS_METHODS: tuple[str, ...] = tuple(m.name for m in REGISTRY if m.fars)
#: the methods the timing sweep of ``python -m bench.scaling`` measures
SCALING_METHODS: tuple[str, ...] = ("cohen", "fars-mc", "fars-closed")


def method(name: str) -> Method:
    """The :class:`Method` called ``name``.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    for m in REGISTRY:
        if m.name == name:
            return m
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")


def methods_needing(*needs: str) -> tuple[str, ...]:
    """The methods (in run order) whose requirement is one of ``needs`` (values of :data:`NEEDS`)."""
    unknown = [n for n in needs if n not in NEEDS]
    if unknown:
        raise ValueError(f"unknown requirements {unknown}; choose from {NEEDS}")
    return tuple(m.name for m in REGISTRY if m.needs in needs)


__all__ = ["NEEDS", "Method", "REGISTRY", "METHODS", "MONTE_CARLO_METHODS", "DETERMINISTIC_METHODS",
           "SPLIT_METHODS", "FARS_METHODS", "SCALING_METHODS", "method", "methods_needing"]
