"""Evaluation tool (``fastsam2-eval``): DAVIS J/F/J&F scoring matched to the DAVIS 2017 reference,
running the tracker (official SAM 2 / dense / pruned) over datasets, reports and a synthetic set.

Submodules: ``metrics`` (per-frame J, F, statistics), ``scoring`` (sequences and folders),
``davis_io`` (DAVIS layout, label PNGs), ``synthetic`` (generator), ``runner`` (tracker runs),
``report`` (JSON / markdown / plot), ``cli`` (the console script). Importing this package does not
import torch.
"""
