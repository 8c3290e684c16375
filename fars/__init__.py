"""FaRS: Fast Randomized Smoothing on provably Lipschitz backbones.

Public API: the certify methods :class:`FaRSMonteCarlo`, :class:`FaRSClosedForm` and :class:`FaRSCrown`
(bound propagation through a ReLU head), the SLL layers
and backbone builder, and the Lipschitz audit; the shared :class:`Certificate` record, the
:class:`Certifier` protocol and :class:`MonteCarloCertifier` live in the method-neutral :mod:`smoothing`
package and are re-exported here.
"""

from smoothing import ABSTAIN, Certificate, Certifier, MonteCarloCertifier, max_certifiable_radius

from .audit import LipschitzAudit, audit_lipschitz
from .backbone import BackboneConfig, SLLBackbone, build_backbone
from .closed_form import FaRSClosedForm, linear_head_radius
from .crown import FaRSCrown
from .head_smoothing import FaRSMonteCarlo
from .sll import LipschitzAvgPool2d, NormalizedLinear, PadChannels, SLLConv2d, SLLDense, SpectralLinear

__all__ = [
    "ABSTAIN",
    "Certificate",
    "Certifier",
    "FaRSClosedForm",
    "FaRSCrown",
    "FaRSMonteCarlo",
    "MonteCarloCertifier",
    "linear_head_radius",
    "max_certifiable_radius",
    "BackboneConfig",
    "SLLBackbone",
    "build_backbone",
    "SLLDense",
    "SLLConv2d",
    "PadChannels",
    "LipschitzAvgPool2d",
    "SpectralLinear",
    "NormalizedLinear",
    "LipschitzAudit",
    "audit_lipschitz",
]
