"""MiraiKakaku data platform: packaging and the `miraikakaku` console script.

Install with the pinned set: `make venv` (see Makefile and requirements.lock). This file is also
the setup file Dataflow flex templates point FLEX_TEMPLATE_PYTHON_SETUP_FILE at.
"""

from setuptools import find_packages, setup

setup(
    name="miraikakaku",
    version="0.1.0",
    description="MiraiKakaku stock-price data platform (Beam pipelines, LSTM model, API)",
    python_requires=">=3.10,<3.11",
    packages=find_packages(include=["miraikakaku*", "stores*", "transforms*", "models*",
                                    "collector*", "pipelines*", "serving*", "notifier*",
                                    "tfx_pipelines*", "analytics*", "quality*"]),
    package_data={"miraikakaku": ["reference/*.csv"],
                  "analytics": ["sql/tables/*.sql", "sql/views/*.sql", "sql/queries/*.sql"]},
    install_requires=[
        "apache-beam[gcp]",
        "tensorflow==2.16.*",
        "tf-keras",
        "exchange_calendars",
        "fastapi",
        "uvicorn",
        "pydantic-settings",
        "rich",
        "pyyaml",
        "matplotlib",
    ],
    entry_points={"console_scripts": ["miraikakaku=miraikakaku.cli:main"]},
)
