"""PUFFERFISH reference networks and their hybrid low-rank variants (spec pufferfish.md §4, §10).

Each ``pufferfish_*`` function converts a (warmed-up) vanilla model with ``factorize`` and the
layer lists of spec section 4; with ``model=None`` it builds a fresh vanilla one first (on the
current default device, so ``with torch.device("meta"):`` counts parameters without memory).
Parameter counts at ``rank_ratio=0.25`` (10 classes / the paper's vocabularies):

============================  ===========  ==========
model                         vanilla      PUFFERFISH
============================  ===========  ==========
VGG-19-BN (CIFAR)             20,560,330   8,370,634
ResNet-18 (CIFAR, no stem BN) 11,173,834   3,336,138
2-layer tied LSTM LM          85,962,278   67,962,278
Transformer 6+6               48,978,432   26,696,192
============================  ===========  ==========
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from flower_suite.models.lowrank import factorize, weight_layer_names
from flower_suite.models.lowrank_lstm import GateLSTM
from flower_suite.models.resnet import ResNet18

_VGG19: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M")
_VGG19 += (512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


class VGG19BN(nn.Module):
    """CIFAR VGG-19 with BatchNorm: 16 bias-free 3x3 convs + BN + ReLU, then FC 512-512-classes.

    Weight layers in forward order: conv1..conv16 (``features.*``), fc17, fc18, fc19
    (``classifier.0/2/4``). 20,560,330 parameters for 10 classes.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for v in _VGG19:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                c_out = int(v)
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out)]
                layers.append(nn.ReLU(inplace=True))
                c_in = c_out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(512, 512), nn.ReLU(True), nn.Linear(512, 512), nn.ReLU(True)
        )
        self.classifier.append(nn.Linear(512, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def hybrid_keep(model: nn.Module, k: int) -> list[str]:
    """Names of weight layers ``1..k-1`` (1-based, registration order): the full-rank prefix."""
    if k < 1:
        raise ValueError(f"k is 1-based and must be >= 1, got {k}")
    return weight_layer_names(model)[: k - 1]


def pufferfish_vgg19(
    model: VGG19BN | None = None, rank_ratio: float = 0.25, k: int = 10
) -> nn.Module:
    """Hybrid VGG-19-BN: conv1..conv(k-1) and fc19 full-rank; conv k..16, fc17, fc18 factorized.

    With k=10 (Table 4.11) and rho=0.25: conv10..conv16 get r=128 and fc17/fc18 (512x512) get
    r=128, U without bias and V with bias (pitfall P3), giving 8,370,634 parameters.
    """
    model = VGG19BN() if model is None else model
    return factorize(model, rank_ratio, hybrid_keep(model, k))


def resnet18_keep_full_rank(model: ResNet18) -> list[str]:
    """Table 4.13's full-rank layers: stem conv, the first BasicBlock, every shortcut, the FC."""
    names = weight_layer_names(model)
    return ["conv1", "layers.0.0", "linear"] + [n for n in names if ".shortcut." in n]


def pufferfish_resnet18(model: ResNet18 | None = None, rank_ratio: float = 0.25) -> nn.Module:
    """Hybrid ResNet-18 (K=4: layers 1..3 = stem conv and block 1's two convs stay full-rank).

    Both 3x3 convs of the other seven blocks are factorized (r = 16/32/64/128 for 64/128/256/512
    planes); 1x1 shortcuts and the classifier stay full-rank. The default vanilla model is
    ``ResNet18(stem_bn=False)`` (pitfall P5): 11,173,834 -> 3,336,138 parameters.
    """
    model = ResNet18(stem_bn=False) if model is None else model
    return factorize(model, rank_ratio, resnet18_keep_full_rank(model))


class LSTMLanguageModel(nn.Module):
    """Word-level LM: embedding -> ``GateLSTM`` (one bias per gate) -> tied decoder with bias.

    Defaults are the WikiText-2 model of Table 4.2: vocabulary 33,278, embedding = hidden =
    1500, two layers, dropout 0.65: 85,962,278 parameters.
    """

    def __init__(
        self, vocab_size: int = 33_278, dim: int = 1500, num_layers: int = 2, dropout: float = 0.65
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim)
        self.drop = nn.Dropout(dropout)
        self.lstm: nn.Module = GateLSTM(dim, dim, num_layers, batch_first=True, dropout=dropout)
        self.decoder = nn.Linear(dim, vocab_size)
        self.decoder.weight = self.embedding.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` ``(B, T)`` -> logits ``(B, T, vocab)``."""
        out, _ = self.lstm(self.drop(self.embedding(tokens)))
        return self.decoder(self.drop(out))


def pufferfish_lstm(model: LSTMLanguageModel | None = None, rank_ratio: float = 0.25) -> nn.Module:
    """Both LSTM layers factorized (r=375 at the defaults); the tied embedding/decoder kept."""
    model = LSTMLanguageModel() if model is None else model
    return factorize(model, rank_ratio)


class MultiHeadAttention(nn.Module):
    """Post-LN multi-head attention sublayer; bias-free concatenated Q/K/V/O projections."""

    def __init__(self, d_model: int, heads: int, dropout: float, eps: float) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError("d_model must be divisible by heads")
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(d_model, d_model, bias=False) for _ in "qkvo")
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model, eps=eps)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, causal: bool = False) -> torch.Tensor:
        def split(t: torch.Tensor) -> torch.Tensor:
            return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

        att = F.scaled_dot_product_attention(
            split(self.q(x)), split(self.k(memory)), split(self.v(memory)), is_causal=causal
        )
        return self.norm(x + self.drop(self.o(att.transpose(1, 2).flatten(2))))


class FeedForward(nn.Module):
    """Post-LN position-wise FFN ``d_model -> d_ff -> d_model`` with biases."""

    def __init__(self, d_model: int, d_ff: int, dropout: float, eps: float) -> None:
        super().__init__()
        self.w1, self.w2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.drop(self.w2(self.drop(F.relu(self.w1(x))))))


class EncoderLayer(nn.Module):
    """Self-attention then FFN."""

    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float, eps: float) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, heads, dropout, eps)
        self.ffn = FeedForward(d_model, d_ff, dropout, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.self_attn(x, x))


class DecoderLayer(nn.Module):
    """Causal self-attention, encoder-decoder attention, FFN."""

    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float, eps: float) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, heads, dropout, eps)
        self.cross_attn = MultiHeadAttention(d_model, heads, dropout, eps)
        self.ffn = FeedForward(d_model, d_ff, dropout, eps)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.cross_attn(self.self_attn(x, x, causal=True), memory))


class Transformer(nn.Module):
    """Encoder-decoder Transformer with one embedding shared by source, target and output.

    Sinusoidal positions, a LayerNorm on the encoder and decoder inputs, post-LN sublayers.
    Defaults (Table 4.3): vocabulary 9,521, N=6, 8 heads, d_model 512, d_ff 2048, LN eps 1e-6:
    48,978,432 parameters.
    """

    positions: torch.Tensor  # (max_len, d_model) sinusoidal table, a non-persistent buffer

    def __init__(
        self,
        vocab_size: int = 9_521,
        d_model: int = 512,
        heads: int = 8,
        d_ff: int = 2048,
        num_layers: int = 6,
        dropout: float = 0.1,
        eps: float = 1e-6,
        max_len: int = 256,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model)
        pos = torch.arange(max_len, dtype=torch.float32)[:, None]
        freq = torch.exp(
            torch.arange(0, d_model, 2, dtype=torch.float32) * -math.log(1e4) / d_model
        )
        table = torch.zeros(max_len, d_model)
        table[:, 0::2], table[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
        self.register_buffer("positions", table, persistent=False)
        self.drop = nn.Dropout(dropout)
        self.enc_norm = nn.LayerNorm(d_model, eps=eps)
        self.dec_norm = nn.LayerNorm(d_model, eps=eps)
        args = (d_model, heads, d_ff, dropout, eps)
        self.encoder = nn.ModuleList(EncoderLayer(*args) for _ in range(num_layers))
        self.decoder = nn.ModuleList(DecoderLayer(*args) for _ in range(num_layers))
        self.out_proj = nn.Linear(d_model, vocab_size, bias=False)
        self.out_proj.weight = self.embedding.weight

    def _embed(self, tokens: torch.Tensor, norm: nn.Module) -> torch.Tensor:
        x = self.embedding(tokens) * math.sqrt(self.d_model)
        return norm(self.drop(x + self.positions[: tokens.shape[1]]))

    def forward(self, src: torch.Tensor, trg: torch.Tensor) -> torch.Tensor:
        """``src`` ``(B, S)``, ``trg`` ``(B, T)`` token ids -> logits ``(B, T, vocab)``."""
        memory = self._embed(src, self.enc_norm)
        for layer in self.encoder:
            memory = layer(memory)
        x = self._embed(trg, self.dec_norm)
        for layer in self.decoder:
            x = layer(x, memory)
        return self.out_proj(x)


def pufferfish_transformer(model: Transformer | None = None, rank_ratio: float = 0.25) -> nn.Module:
    """Encoder and decoder layers 2..N factorized (r=128 at the defaults, concatenated Q/K/V/O
    and both FFN matrices; pitfall P8); layer 1 of each, embeddings and LayerNorms kept."""
    model = Transformer() if model is None else model
    return factorize(model, rank_ratio, ["encoder.0", "decoder.0"])
