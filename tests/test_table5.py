"""Top-5 error beside top-1 (evaluate, the run files, the report)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from varshift.training.loop import evaluate


class LogitTable(nn.Module):
    """Returns row ``i`` of ``logits`` for the input ``i``."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = nn.Parameter(logits, requires_grad=False)

    def forward(self, x):
        return self.logits[x.long()]


def test_top5_accuracy_counts_the_labels_among_the_five_largest_logits():
    # 7 classes; the label's rank among each image's logits (0: the largest) is 0, 1, 4, 5, 6, 2: top-1 holds one
    # image of six, top-5 the four of rank below 5
    ranks = [0, 1, 4, 5, 6, 2]
    logits = torch.arange(7.0, 0.0, -1.0).repeat(6, 1)  # class c has rank c
    labels = torch.tensor(ranks)
    model = LogitTable(logits)
    batches = [(torch.arange(0, 4), labels[:4]), (torch.arange(4, 6), labels[4:])]
    result = evaluate(model, batches, label="test", progress=False)
    assert result.acc == pytest.approx(100.0 / 6)
    assert result.top5_acc == pytest.approx(400.0 / 6)
    assert result.loss == pytest.approx(F.cross_entropy(logits, labels).item())
    assert evaluate(LogitTable(logits[:, :5]), [(torch.arange(6), labels % 5)], label="test",
                    progress=False).top5_acc is None  # five classes: every label is in the top 5
