"""The composite loss equals hand computations, and its tie term behaves as the method says."""

import math

import pytest
import torch

from crome_ray.train.loss import bt_loss, composite_loss, tie_loss


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def t(*xs):
    return torch.tensor(xs, dtype=torch.float64)


def test_bradley_terry_is_minus_log_sigmoid_of_the_margin_reduced_difference():
    for delta, margin in [(0.0, 0.0), (1.3, 0.0), (-2.0, 0.0), (1.0, 0.5), (0.2, 1.0)]:
        expected = -math.log(sig(delta - margin))
        assert bt_loss(t(delta), margin).item() == pytest.approx(expected, rel=1e-12)


def test_the_tie_term_is_log_2_at_zero_and_symmetric():
    assert tie_loss(t(0.0)).item() == pytest.approx(math.log(2), rel=1e-12)
    for d in (0.1, 1.0, 3.7):
        expected = -0.5 * (math.log(sig(d)) + math.log(sig(-d)))
        assert tie_loss(t(d)).item() == pytest.approx(expected, rel=1e-12)
        assert tie_loss(t(-d)).item() == pytest.approx(expected, rel=1e-12)
        assert tie_loss(t(d)).item() > math.log(2)  # minimal at Δ = 0


def test_the_tie_gradient_pushes_delta_toward_zero_from_either_side():
    for d in (-3.0, -0.4, 0.4, 3.0):
        delta = t(d).requires_grad_()
        tie_loss(delta).sum().backward()
        step = -delta.grad.item()  # a gradient-descent step
        assert step * d < 0, (d, step)
        # derivative of −½[log σ(d) + log σ(−d)] is σ(d) − ½
        assert delta.grad.item() == pytest.approx(sig(d) - 0.5, rel=1e-9)
    delta = t(0.0).requires_grad_()
    tie_loss(delta).sum().backward()
    assert delta.grad.item() == 0.0


def test_the_batch_total_is_the_paper_sum_over_pairs_with_lambda_on_ties():
    r_a, r_b = t(2.0, 0.5, 1.0, -1.0), t(1.0, 1.5, 1.2, -1.0)
    is_tie = torch.tensor([False, False, True, True])
    lam = 0.7
    parts = composite_loss(r_a, r_b, is_tie, tie_weight=lam)
    bt = [-math.log(sig(1.0)), -math.log(sig(-1.0))]
    tie = [-0.5 * (math.log(sig(-0.2)) + math.log(sig(0.2))), math.log(2)]
    assert parts.total.item() == pytest.approx((sum(bt) + lam * sum(tie)) / 4, rel=1e-12)
    assert parts.bt.item() == pytest.approx(sum(bt) / 2, rel=1e-12)
    assert parts.tie.item() == pytest.approx(sum(tie) / 2, rel=1e-12)
    assert (parts.n_pref, parts.n_tie, parts.correct) == (2, 2, 1)
    m = parts.metrics()
    assert m["pair_accuracy"] == 0.5 and m["tie_abs_delta"] == pytest.approx(0.1)


def test_lambda_zero_ignores_ties_and_a_batch_of_one_kind_reports_zero_for_the_other():
    r_a, r_b = t(1.0, 0.0), t(0.0, 0.0)
    only_pref = composite_loss(r_a, r_b, torch.tensor([False, False]))
    assert only_pref.tie.item() == 0.0 and "tie_abs_delta" not in only_pref.metrics()
    mixed = composite_loss(r_a, r_b, torch.tensor([False, True]), tie_weight=0.0)
    assert mixed.total.item() == pytest.approx(-math.log(sig(1.0)) / 2, rel=1e-12)


def test_per_pair_margins_apply_to_preference_pairs_only():
    r_a, r_b = t(1.0, 0.3), t(0.0, 0.0)
    parts = composite_loss(r_a, r_b, torch.tensor([False, True]), margin=t(0.5, 9.0))
    expected = (-math.log(sig(0.5)) + -0.5 * (math.log(sig(0.3)) + math.log(sig(-0.3)))) / 2
    assert parts.total.item() == pytest.approx(expected, rel=1e-12)


def test_centering_adds_the_mean_squared_reward_sum_and_leaves_delta_alone():
    r_a, r_b = t(3.0, 1.0), t(1.0, 2.0)
    plain = composite_loss(r_a, r_b, torch.tensor([False, False]))
    centered = composite_loss(r_a, r_b, torch.tensor([False, False]), center_coefficient=0.01)
    assert centered.center.item() == pytest.approx(0.01 * (16 + 9) / 2)
    assert centered.total.item() == pytest.approx(plain.total.item() + centered.center.item())


def test_bad_shapes_and_empty_batches_are_refused():
    with pytest.raises(ValueError, match="alike"):
        composite_loss(t(1.0, 2.0), t(1.0), torch.tensor([False]))
    with pytest.raises(ValueError, match="empty"):
        composite_loss(t(), t(), torch.tensor([], dtype=torch.bool))
