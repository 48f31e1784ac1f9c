"""The Crome training objective (pure torch, no model, no Ray).

For a pair (a, b) with rewards r_a, r_b and Δ = r_a − r_b (a is the winner of a
preference pair):

- Bradley–Terry on preference pairs: −log σ(Δ − m), m an optional margin;
- tie loss on neutral pairs: −½ [log σ(Δ) + log σ(−Δ)], which is smallest at Δ = 0
  (value log 2) and whose gradient pushes Δ toward 0 from either side;
- optional reward centering, c · mean((r_a + r_b)²) over all pairs (the idea of TRL's
  ``center_rewards_coefficient``), which keeps rewards near 0 without changing Δ.

total = (Σ_pref BT + λ · Σ_tie tie) / n_pairs + centering. Dividing by the number of
pairs in the batch, not per kind, keeps the paper's sum form (docs/method.md, step 7) with
a batch-size-independent scale; λ = 1 is the paper's setting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossParts:
    total: torch.Tensor  # what backward() runs on
    bt: torch.Tensor  # mean BT loss over preference pairs (0 if none), detached
    tie: torch.Tensor  # mean tie loss over tie pairs (0 if none), detached
    center: torch.Tensor  # the centering term as added to total, detached
    n_pref: int
    n_tie: int
    correct: int  # preference pairs with Δ > 0
    tie_abs_delta_sum: float  # Σ |Δ| over tie pairs

    def metrics(self) -> dict[str, float]:
        out = {"loss": float(self.total.detach()), "loss_bt": float(self.bt), "loss_tie": float(self.tie)}
        out["loss_center"] = float(self.center)
        if self.n_pref:
            out["pair_accuracy"] = self.correct / self.n_pref
        if self.n_tie:
            out["tie_abs_delta"] = self.tie_abs_delta_sum / self.n_tie
        return out


def bt_loss(delta: torch.Tensor, margin: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Per-pair Bradley–Terry loss −log σ(Δ − m)."""
    return -F.logsigmoid(delta - margin)


def tie_loss(delta: torch.Tensor) -> torch.Tensor:
    """Per-pair tie loss −½ [log σ(Δ) + log σ(−Δ)]."""
    return -0.5 * (F.logsigmoid(delta) + F.logsigmoid(-delta))


def composite_loss(
    r_a: torch.Tensor,
    r_b: torch.Tensor,
    is_tie: torch.Tensor,
    tie_weight: float = 1.0,
    margin: torch.Tensor | float = 0.0,
    center_coefficient: float = 0.0,
) -> LossParts:
    """The batch loss and its parts. ``r_a``/``r_b``: rewards, shape (n,); ``is_tie``: bool (n,);
    ``margin``: a scalar or a per-pair tensor (applied to preference pairs only)."""
    if r_a.shape != r_b.shape or r_a.shape != is_tie.shape or r_a.dim() != 1:
        raise ValueError(
            f"rewards and tie flags must be (n,) alike: {r_a.shape}, {r_b.shape}, {is_tie.shape}"
        )
    n = r_a.shape[0]
    if n == 0:
        raise ValueError("an empty batch has no loss")
    is_tie = is_tie.to(torch.bool)
    pref = ~is_tie
    delta = r_a - r_b
    if isinstance(margin, torch.Tensor) and margin.dim() == 1:
        margin = margin[pref]
    bt_terms = bt_loss(delta[pref], margin)
    tie_terms = tie_loss(delta[is_tie])
    total = (bt_terms.sum() + tie_weight * tie_terms.sum()) / n
    center = r_a.new_zeros(())
    if center_coefficient:
        center = center_coefficient * ((r_a + r_b) ** 2).mean()
        total = total + center
    zero = r_a.new_zeros(())
    n_pref, n_tie = int(pref.sum()), int(is_tie.sum())
    return LossParts(
        total=total,
        bt=(bt_terms.mean() if n_pref else zero).detach(),
        tie=(tie_terms.mean() if n_tie else zero).detach(),
        center=center.detach(),
        n_pref=n_pref,
        n_tie=n_tie,
        correct=int((delta[pref] > 0).sum()),
        tie_abs_delta_sum=float(delta[is_tie].abs().sum().detach()),
    )
