"""Eq 4.11–4.14 against a literal per-sample, per-layer computation, and the constant-weight gradient."""

import pytest
import torch

from ditcompress.distill import feature_mse, normalized_feature_loss

F64 = torch.float64  # tensors are built in float64 explicitly: the default dtype is global state


def _features(seed=0, batch=3, dims=(5, 7, 4)):
    g = torch.Generator().manual_seed(seed)
    teacher = [torch.randn(batch, d, generator=g, dtype=F64) * (l + 1) for l, d in enumerate(dims)]  # magnitudes differ
    student = [(t + 0.3 * torch.randn(t.shape, generator=g, dtype=F64)).requires_grad_() for t in teacher]
    task = torch.rand(batch, generator=g, dtype=F64) + 0.1
    return teacher, student, task


def literal(teacher, student, task, eps):
    """Eq 4.11–4.14 written out sample by sample, the weights computed as plain numbers."""
    n_b, n_l = teacher[0].shape[0], len(teacher)
    total = 0.0
    for i in range(n_b):
        losses = [((teacher[l][i] - student[l][i]) ** 2).sum() / teacher[l].shape[1] for l in range(n_l)]
        eta = [float(((teacher[l][i] ** 2).sum() / teacher[l].shape[1]).sqrt()) for l in range(n_l)]
        inner = 0.0
        for l in range(n_l):
            w = (float(task[i]) / (float(losses[l]) + eps)) * (sum(eta) / (n_l * eta[l] + eps))
            inner = inner + w * losses[l]
        total = total + inner / n_l
    return total / n_b


@pytest.mark.parametrize("eps", [1e-8, 0.5])
def test_value_and_gradient_equal_the_literal_equations(eps):
    teacher, student, task = _features()
    got = normalized_feature_loss(teacher, student, task, eps=eps)
    want = literal(teacher, student, task, eps)
    assert float(got) == pytest.approx(float(want), rel=1e-12)
    g_got = torch.autograd.grad(got, student)
    g_want = torch.autograd.grad(want, student)  # weights entered as constants
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)
        assert a.abs().sum() > 0  # the student is pulled towards the teacher


def test_equal_magnitudes_give_the_task_loss_scale():
    """Layers of equal teacher RMS: norm factor 1, so with ε → 0 the loss is the mean task loss."""
    g = torch.Generator().manual_seed(1)
    base = torch.randn(2, 6, generator=g, dtype=F64)
    teacher = [base, base.flip(1), -base]  # same RMS per sample in every layer
    student = [t + 0.1 * torch.randn(t.shape, generator=g, dtype=F64) for t in teacher]
    task = torch.tensor([0.2, 0.7], dtype=F64)
    assert float(normalized_feature_loss(teacher, student, task, eps=1e-12)) == pytest.approx(0.45, rel=1e-9)


def test_the_weights_are_constants_in_the_backward_pass():
    """Differentiating w as well would cancel the gradient (w·L ≈ L_task · norm): ours does not."""
    teacher, student, task = _features(2)
    ours = torch.autograd.grad(normalized_feature_loss(teacher, student, task), student)
    per_layer = feature_mse(teacher, student)
    eta = torch.stack([t.pow(2).mean(1).sqrt() for t in teacher], 1)
    live_w = task[:, None] / (per_layer + 1e-8) * eta.sum(1, keepdim=True) / (3 * eta + 1e-8)
    cancelled = torch.autograd.grad((live_w * per_layer).mean(), student)
    assert sum(float(c.abs().sum()) for c in cancelled) < 1e-6 * sum(float(o.abs().sum()) for o in ours)


def test_feature_mse_is_eq_4_11():
    teacher, student, _ = _features(3)
    got = feature_mse(teacher, student)
    assert got.shape == (3, 3)
    for l, (t, s) in enumerate(zip(teacher, student)):
        torch.testing.assert_close(got[:, l], ((t - s) ** 2).sum(1) / t.shape[1])


def test_bad_shapes_are_one_line_errors():
    teacher, student, task = _features()
    with pytest.raises(ValueError, match="2 teacher and 3 student"):
        normalized_feature_loss(teacher[:2], student, task)
    with pytest.raises(ValueError, match=r"layer 1: teacher \(3, 7\) and student \(3, 5\)"):
        normalized_feature_loss(teacher, [student[0], student[0], student[2]], task)
    with pytest.raises(ValueError, match=r"task_loss must have shape \(3,\)"):
        normalized_feature_loss(teacher, student, task[:2])
