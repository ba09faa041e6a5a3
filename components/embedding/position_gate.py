"""SFace's embedding with a learned gate per face region: what the chain trains for masked probes.

Why: SFace's embedding is a sum over its 7 x 7 map of each position's share (plus a bias). A mask
covers the lower rows, so a masked probe's mouth and nose shares describe the mask, and a linear head
on the summed embedding cannot take them out again (head training on masked copies moved masked TAR by
seed noise only). The gate scales each position's share by ``2 sigmoid(a . z_p + c_p + mlp(z_p))``:
from what the share looks like and where it is, so training on synthetic masked copies can turn mask
shares down. It starts at exactly 1 (the pretrained embedding), and a penalty on gates away from 1 on
samples that are not augmented copies (``train.gate_bare_penalty``) keeps bare faces as they were.
Measured on the chain's held-out LFW identities (2026-12-01, cached bfloat16 features, 2 seeds): masked
TAR at FAR 1e-3 0.966 -> 0.969-0.970 with plain accuracy -0.0005 and plain TAR unchanged (penalty 0.3);
penalty 0.1 gave +0.006 masked for -0.0017 plain accuracy.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

GATE_INPUT_SCALE = 0.1  # shares are ~0.02 per value; the hidden layer sees them x 10 ... x 0.1 of their norm
GATE_HIDDEN = 32


class PositionGatedHead(nn.Module):
    """``linear(sum_p gate_p * z_p + bias)`` on N x (positions * dim) per-position shares ``z``."""

    bias: Tensor  # a buffer (register_buffer in __init__)

    def __init__(
        self, positions: int, dim: int, bias: Tensor, out_features: int | None = None, hidden: int = GATE_HIDDEN
    ) -> None:
        super().__init__()
        self.positions, self.dim = positions, dim
        self.out_features = out_features or dim
        self.register_buffer("bias", bias.detach().clone().float())  # the backbone's own, not trained
        self.gate_content = nn.Parameter(torch.zeros(dim))
        self.gate_position = nn.Parameter(torch.zeros(positions))
        gate_in, gate_out = nn.Linear(dim, hidden), nn.Linear(hidden, 1)
        self.gate_hidden = nn.Sequential(gate_in, nn.ReLU(), gate_out)
        self.linear = nn.Linear(dim, self.out_features, bias=False)
        gen = torch.Generator().manual_seed(0)  # fixed: a pretrained model's weights (its fingerprint) never vary
        with torch.no_grad():
            gate_in.weight.copy_(torch.randn(hidden, dim, generator=gen) / dim**0.5)
            gate_in.bias.zero_()
            gate_out.weight.zero_()  # the gate starts at exactly 1
            gate_out.bias.zero_()
            if self.out_features == dim:
                self.linear.weight.copy_(torch.eye(dim))  # and the head at the identity
            else:
                nn.init.xavier_uniform_(self.linear.weight, generator=gen)

    def shares(self, feats: Tensor) -> Tensor:
        return feats.view(-1, self.positions, self.dim)  # -1, not len(): a traced graph keeps its batch dynamic

    def gates(self, feats: Tensor) -> Tensor:
        """N x positions, in (0, 2); 1 where nothing was learned."""
        z = self.shares(feats)
        logit = z @ self.gate_content + self.gate_position + self.gate_hidden(z * GATE_INPUT_SCALE).squeeze(-1)
        return 2 * torch.sigmoid(logit)

    def forward(self, feats: Tensor) -> Tensor:
        z = self.shares(feats)
        return self.linear((self.gates(feats).unsqueeze(-1) * z).sum(1) + self.bias)

    def gate_parameters(self) -> list[nn.Parameter]:
        return [self.gate_content, self.gate_position, *self.gate_hidden.parameters()]

    def bare_penalty(self, feats: Tensor) -> Tensor:
        """Mean squared distance of the gates from 1: what bare faces pay for being re-weighted."""
        return ((self.gates(feats) - 1) ** 2).mean()


def gate_parameters(head: nn.Module) -> list[nn.Parameter]:
    """Every gate parameter in ``head`` (a gated head, or a fused head holding one)."""
    return [p for m in head.modules() if isinstance(m, PositionGatedHead) for p in m.gate_parameters()]
