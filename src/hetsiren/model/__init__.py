"""hetsiren.model: the HetSIREN networks (encoders, meta-sinusoidal decoder, pose corrections).

The masked volume (``hetsiren.model.volume``) and the full forward model
(``hetsiren.model.forward``) are imported from their modules.
"""

from hetsiren.model.decoder import Activation, Decoder
from hetsiren.model.encoders import ConvBackbone, Encoder, EncoderKind, MLPBackbone, resize_images
from hetsiren.model.network import HetSIRENNet, NetworkConfig, build_network
from hetsiren.model.pose import correction_matrix, refine_pose
from hetsiren.model.siren import MetaSineLayer, SineLayer, siren_bias_bound, siren_weight_bound

__all__ = [
    "Activation",
    "ConvBackbone",
    "Decoder",
    "Encoder",
    "EncoderKind",
    "HetSIRENNet",
    "MLPBackbone",
    "MetaSineLayer",
    "NetworkConfig",
    "SineLayer",
    "build_network",
    "correction_matrix",
    "refine_pose",
    "resize_images",
    "siren_bias_bound",
    "siren_weight_bound",
]
