"""Flex-template launcher: the file Dataflow runs (``FLEX_TEMPLATE_PYTHON_PY_FILE``) to start a job.

Both templates (``templates/streaming`` and ``templates/backfill``) use this module. The Dataflow
launcher runs ``python /template/templates/launcher.py --runner=DataflowRunner --project=…
--region=… --temp_location=… --setup_file=/template/setup.py --<parameter>=<value> …``; ``main``
hands those arguments unchanged to ``pipelines.prices.run`` (which parses them as ``PriceOptions``
plus Beam's own options) and returns once ``run`` returns, so the process exits as Google's Flex
Template docs require. Locally: ``python templates/launcher.py --skip_inference=true --input=f.csv``
(DirectRunner); see ``templates/README.md`` for building and running the templates.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

_REPO_ROOT = Path(__file__).resolve().parents[1]


def main(argv: Sequence[str] | None = None) -> int:
    """Start the price pipeline with ``argv`` and return as soon as ``run`` returns.

    Args:
        argv: pipeline arguments (default: ``sys.argv[1:]``), e.g. ``--subscription=…``.

    Returns:
        The process exit status (0: the pipeline was started, or for a bounded local run finished).

    Raises:
        ValueError, FileNotFoundError: from ``run``'s option checks and preflight (bad parameter,
            missing input file, model or rules file); the launcher then fails with that message.
    """
    # The launcher runs this file as a script: sys.path[0] is templates/, not the repository.
    if str(_REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(_REPO_ROOT))
    logging.getLogger().setLevel(logging.INFO)
    from pipelines.prices import run

    args = list(sys.argv[1:] if argv is None else argv)
    result = run(args)
    logging.info("pipelines.prices.run returned %s; the launcher exits", type(result).__name__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
