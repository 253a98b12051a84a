"""hetsiren: real-space heterogeneous reconstruction of cryo-EM conformational states."""

__version__ = "0.1.0"
