"""MiraiKakaku core: the shared domain model (price events, instruments, calendars, row keys).

Everything that more than one part of the platform needs lives here: the Beam transforms
(`transforms/`), the pipelines (`pipelines/`), the model code (`models/`), the stores
(`stores/`) and the API (`serving/`) all import these definitions, so the seams are defined once.
"""

__version__ = "0.1.0"
