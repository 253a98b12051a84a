"""Training: configuration, losses, data batches, the trainer and encode/decode."""

from hetsiren.train.config import PAPER_DEFAULTS, TrainConfig
from hetsiren.train.inference import (
    decode_latent,
    decode_to_files,
    encode_file,
    encode_particles,
    load_run,
    read_latent_points,
)
from hetsiren.train.trainer import TrainingDiverged, TrainResult, train

__all__ = [
    "PAPER_DEFAULTS",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "decode_latent",
    "decode_to_files",
    "encode_file",
    "encode_particles",
    "load_run",
    "read_latent_points",
    "train",
]
