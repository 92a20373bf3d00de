"""Scripts that run gradlab's agents and attacks and write plots and metrics into results/."""

import os

# Scripts, not library code: quiet TensorFlow's start-up logging before anything imports it
# (``python -m experiments.<name>`` imports this package first). A user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
