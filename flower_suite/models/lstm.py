"""A character-level LSTM for next-character prediction (LEAF Shakespeare)."""

from __future__ import annotations

import torch
from torch import nn


class CharLSTM(nn.Module):
    """Embedding -> LSTM -> linear decoder on the last time step.

    Defaults follow FedMA's Shakespeare model (Table 5.5): vocabulary 80, embedding 8, one
    layer of 256 hidden units: 640 + (4*256*(8+256) + 2*4*256) + (256*80 + 80) = 293,584
    parameters.
    """

    def __init__(
        self,
        vocab_size: int = 80,
        embedding_dim: int = 8,
        hidden_size: int = 256,
        num_layers: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(
            embedding_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embedding(x))
        return self.decoder(out[:, -1, :])
