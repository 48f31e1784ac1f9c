"""crome-ray: causally robust reward modelling (Crome, arXiv 2506.16507) on Ray."""

__version__ = "0.1.0"
