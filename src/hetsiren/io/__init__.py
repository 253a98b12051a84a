"""Data layer: RELION STAR, cryoSPARC ``.cs`` and MRC stacks to and from one ParticleSet.

Nothing downstream knows about file formats: :func:`read_particles` returns a
:class:`~hetsiren.io.particles.ParticleSet` (poses as RELION matrices A, origins in Å, CTF in
RELION/CTFFIND units, images read lazily), and the writers give the user back their own file
with only our columns changed.
"""

from hetsiren.io.cryosparc import write_cs
from hetsiren.io.formats import describe_particles, input_files, read_particles, read_rotations
from hetsiren.io.mrc import MrcImageSource, MrcStackWriter, read_map, write_map
from hetsiren.io.particles import CTFParams, ImageSource, ParticleSet
from hetsiren.io.star import write_new_star, write_star
from hetsiren.outputs import atomic_path

__all__ = [
    "CTFParams",
    "ImageSource",
    "MrcImageSource",
    "MrcStackWriter",
    "ParticleSet",
    "atomic_path",
    "describe_particles",
    "input_files",
    "read_map",
    "read_particles",
    "read_rotations",
    "write_cs",
    "write_map",
    "write_new_star",
    "write_star",
]
