"""The models: what a model gives back and what the driver asks of one (``results``),
the DeePMD adapter (``deepmd``) and its fast path (``direct``), the only modules that
import deepmd-kit or a backend; frame and atomic parameters (``parameters``), and the
device of each rank (``devices``)."""
