"""sbi_core: the library behind sbi-ops (tasks, stores, posteriors, calibration).

Never imports prefect or mlflow: it runs without the orchestration stack installed.
"""

__version__ = "0.1.0"
