"""SFace's position gates (facegate.components.embedding.position_gate): the pretrained embedding at the start,
and trained on masked copies, mask regions turned down while bare faces keep their gates near 1."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from facegate.components.core.settings import load_settings
from facegate.components.embedding.backbones import Backbone
from facegate.components.embedding.model import EmbeddingModel, upgrade_sface_heads
from facegate.components.embedding.position_gate import PositionGatedHead, gate_parameters
from facegate.components.embedding.train import TrainConfig, train_head

POSITIONS, DIM, MASKED = 4, 8, [2, 3]  # positions 2 and 3: the lower face


class SharesBackbone(Backbone):
    """Features are per-position shares already (what SFaceBackbone emits); head training never runs it."""

    name = "shares"
    feature_dim = POSITIONS * DIM
    input_size = 8

    def embedding_head(self, dim: int) -> nn.Module:
        return PositionGatedHead(POSITIONS, DIM, torch.zeros(DIM), out_features=dim)


def faces(seed: int = 0, identities: int = 24, per_identity: int = 4):
    """Bare faces: each identity's own vector at every position, plus noise; masked copies: the lower
    positions replaced by one mask pattern shared by everybody (plus noise)."""
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(identities, POSITIONS, DIM))
    labels = np.repeat(np.arange(identities), per_identity)
    bare = protos[labels] + 0.3 * rng.normal(size=(len(labels), POSITIONS, DIM))
    masked = bare.copy()
    masked[:, MASKED] = 2.0 * rng.normal(size=DIM) + 0.3 * rng.normal(size=(len(labels), len(MASKED), DIM))
    flat = lambda a: a.reshape(len(a), -1).astype(np.float32)  # noqa: E731
    return flat(bare), flat(masked), labels


def test_starts_as_the_plain_sum_and_the_same_every_time():
    head = PositionGatedHead(49, 128, torch.randn(128))
    shares = torch.randn(5, 49 * 128)
    assert torch.equal(head.gates(shares), torch.ones(5, 49))
    torch.testing.assert_close(head(shares), shares.view(5, 49, 128).sum(1) + head.bias)
    again = PositionGatedHead(49, 128, head.bias)
    assert all(torch.equal(a, b) for a, b in zip(head.state_dict().values(), again.state_dict().values()))
    assert len(gate_parameters(nn.Sequential(head, nn.Linear(2, 2)))) == 6  # content, position, hidden (4)


def trained(penalty: float) -> tuple[EmbeddingModel, np.ndarray, np.ndarray]:
    bare, masked, labels = faces()
    torch.manual_seed(0)
    model = EmbeddingModel(SharesBackbone(), dim=DIM)
    cfg = TrainConfig.from_settings(
        load_settings(),
        p=8,
        k=4,
        epochs=30,
        lr=1e-3,
        seed=1,
        gate_lr=3e-2,
        gate_bare_penalty=penalty,
        pretrained_decay=1.0,
        weight_decay=0.0,
    )
    train_head(model, bare, None, labels, cfg, aug_feats=[masked], aug_prob=0.5)
    return model, bare, masked


def test_masked_copies_turn_the_mask_down_and_bare_faces_keep_their_gates():
    model, bare, masked = trained(penalty=3.0)
    with torch.no_grad():
        g_masked = model.head.gates(torch.from_numpy(masked)).mean(0).numpy()
        g_bare = model.head.gates(torch.from_numpy(bare)).mean(0).numpy()
    assert g_masked[MASKED].max() < 0.6 * g_masked[[0, 1]].min(), g_masked
    assert np.abs(g_bare - 1).max() < 0.2, g_bare  # measured 0.13: content, not place, decides
    free, _, _ = trained(penalty=0.0)
    with torch.no_grad():
        g_free = free.head.gates(torch.from_numpy(bare)).mean(0).numpy()
    assert np.abs(g_free - 1).max() > np.abs(g_bare - 1).max()  # the penalty is what holds bare faces


def test_a_model_registered_before_the_gates_is_upgraded_to_its_exact_equivalent():
    """Revision 1 (SFace's summed embedding as features, a linear head on it), as MLflow unpickles it,
    becomes the gated head with gates at 1 and the same linear layer: the same embeddings and today's
    state-dict layout (so its local copy loads)."""
    from facegate.components.embedding.backbones import make_backbone
    from facegate.components.embedding.model import embed_chips

    W = torch.linalg.qr(torch.randn(128, 128, generator=torch.Generator().manual_seed(1)))[0]
    today = EmbeddingModel(make_backbone("dlib_resnet+sface")).eval()
    with torch.no_grad():
        today.head.heads[1].linear.weight.copy_(W)
    old = EmbeddingModel(make_backbone("dlib_resnet+sface")).eval()
    old.head.heads[1] = nn.Linear(128, 128, bias=False)
    with torch.no_grad():
        old.head.heads[1].weight.copy_(W)
    old.head.in_dims = [256, 128]
    old.backbone.feature_dim = 384
    old.backbone.members[1]._identity = nn.Linear(128, 128, bias=False)
    up = upgrade_sface_heads(old)
    assert up.state_dict().keys() == today.state_dict().keys() and up.backbone.feature_dim == 256 + 49 * 128
    chips = np.random.default_rng(0).integers(0, 256, (2, 150, 150, 6), dtype=np.uint8)
    np.testing.assert_allclose(embed_chips(up, chips), embed_chips(today, chips), atol=1e-6)
    assert upgrade_sface_heads(today) is today


def test_head_training_moves_only_the_gates_when_asked():
    from facegate.components.embedding.backbones import make_backbone
    from facegate.components.embedding.train import head_parameters

    fused = EmbeddingModel(make_backbone("dlib_resnet+sface"))
    gates = head_parameters(fused, "gates")
    assert {id(p) for p in gates} == {id(p) for p in gate_parameters(fused.head)} and len(gates) == 6
    assert len(head_parameters(fused, "all")) == len(list(fused.head.parameters())) > len(gates)
    dlib = EmbeddingModel(make_backbone("dlib_resnet"))  # no gates: its whole head
    assert head_parameters(dlib, "gates") == list(dlib.head.parameters())
