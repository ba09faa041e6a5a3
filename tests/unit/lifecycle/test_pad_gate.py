"""The fine-tuned PAD pair's gate: no worse BPCER100 on the held-out subjects than every baseline."""

from __future__ import annotations

from facegate.components.lifecycle.pad_models import pad_gate


def test_no_worse_than_every_baseline_promotes() -> None:
    assert pad_gate(0.0, {"zero-shot pair": 0.0}).promote  # a tie is no worse
    assert pad_gate(0.01, {"zero-shot pair": 0.02, "champion v1": 0.01}).promote


def test_worse_than_any_baseline_is_rejected_and_says_which() -> None:
    decision = pad_gate(0.02, {"zero-shot pair": 0.03, "champion v2": 0.01})
    assert not decision.promote and "champion v2" in decision.reason and "zero-shot" not in decision.reason
    assert not pad_gate(float("nan"), {"zero-shot pair": 0.5}).promote
