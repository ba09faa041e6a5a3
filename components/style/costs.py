"""Neural style transfer's costs as the course writes them (Gatys et al.): the content cost, the Gram
matrix, the per-layer and weighted style costs, and the total J = alpha J_content + beta J_style.

Pure tensor functions, apart from the optimisation in transfer.py, so they can be checked by hand.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor


def _chw(a: Tensor) -> Tensor:
    """One image's activations as n_C x n_H x n_W (a batch of one is accepted)."""
    if a.ndim == 4:
        if a.shape[0] != 1:
            raise ValueError(f"expected the activations of one image, got a batch of {a.shape[0]}")
        a = a[0]
    if a.ndim != 3:
        raise ValueError(f"expected n_C x n_H x n_W activations, got shape {tuple(a.shape)}")
    return a


def gram_matrix(a: Tensor) -> Tensor:
    """Style matrix G_kk' = sum_ij a_ijk a_ijk': n_C x n_C, from n_C x n_H x n_W (or 1 x ...) activations.

    Unrolled to A (n_C x n_H n_W), it is A A^T: how strongly each pair of channels fires together,
    wherever in the image; that co-occurrence, not the position, is what "style" means here.
    """
    a = _chw(a)
    unrolled = a.reshape(a.shape[0], -1)
    return unrolled @ unrolled.T


def content_cost(a_C: Tensor, a_G: Tensor) -> Tensor:
    """J_content(C, G) = 1 / (4 n_H n_W n_C) * sum (a(C) - a(G))^2 at one layer."""
    a_C, a_G = _chw(a_C), _chw(a_G)
    if a_C.shape != a_G.shape:
        raise ValueError(f"content activations differ in shape: {tuple(a_C.shape)} vs {tuple(a_G.shape)}")
    n_C, n_H, n_W = a_G.shape
    return ((a_C - a_G) ** 2).sum() / (4 * n_H * n_W * n_C)


def style_cost_from_gram(gram_S: Tensor, a_G: Tensor) -> Tensor:
    a_G = _chw(a_G)
    n_C, n_H, n_W = a_G.shape
    return ((gram_S - gram_matrix(a_G)) ** 2).sum() / (2 * n_H * n_W * n_C) ** 2


def layer_style_cost(a_S: Tensor, a_G: Tensor) -> Tensor:
    """J_style[l](S, G) = 1 / (2 n_H n_W n_C)^2 * sum_kk' (G(S)_kk' - G(G)_kk')^2.

    S and G must have the same activation shape (the style image is resized to G's size), so that the
    one normalisation means the same for both Gram matrices.
    """
    a_S, a_G = _chw(a_S), _chw(a_G)
    if a_S.shape != a_G.shape:
        raise ValueError(f"style activations differ in shape: {tuple(a_S.shape)} vs {tuple(a_G.shape)}")
    return style_cost_from_gram(gram_matrix(a_S), a_G)


def style_cost(a_S: Mapping[str, Tensor], a_G: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
    """J_style(S, G) = sum_l lambda[l] * J_style[l](S, G), over the layers named in ``weights``."""
    return sum((w * layer_style_cost(a_S[name], a_G[name]) for name, w in weights.items()), start=torch.zeros(()))


def total_cost(J_content: Tensor, J_style: Tensor, alpha: float, beta: float) -> Tensor:
    """J(G) = alpha * J_content(C, G) + beta * J_style(S, G)."""
    return alpha * J_content + beta * J_style
