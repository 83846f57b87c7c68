"""flmn-np: the Feature-Label Memory Network and MANN in NumPy/CuPy, with hand-derived gradients."""

__version__ = "0.1.0"
