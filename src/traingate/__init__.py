"""traingate: continuous training on GitHub Actions that only ships a model when it improved.

This module stays import-light on purpose: `traingate --help` must not pay for mlflow, boto3,
dvc, PIL or numpy, so nothing here imports them.
"""

__version__ = "0.1.0"
