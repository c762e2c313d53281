"""ensemble-driver: an i-PI protocol client for DeePMD-kit models and their ensembles."""

__version__ = "0.5.0"
