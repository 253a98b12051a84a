"""Training: configuration (``config``), losses, the trainer and encode/decode (``inference``).

Only the configuration is imported here: the run folder (``hetsiren.rundir``) records a
``TrainConfig`` and the trainer writes the run folder, so importing the trainer from this
package's ``__init__`` would make ``rundir → train → trainer → rundir`` a circle. Import
``train`` from ``hetsiren.train.trainer`` and encode/decode from ``hetsiren.train.inference``.
"""

from hetsiren.train.config import PAPER_DEFAULTS, TrainConfig

__all__ = ["PAPER_DEFAULTS", "TrainConfig"]
