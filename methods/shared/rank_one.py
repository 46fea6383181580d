"""The closed-form rank-one key-value update of ROME.

Given a key k*, the change r the layer should add to its output for that key, and the key covariance
C = E[k kᵀ], the update minimizing the change on other keys (weighted by C) subject to W' k* = W k* + r is

    W' = W + r uᵀ / (uᵀ k*),   u = C⁻¹ k*.
"""

from __future__ import annotations

import torch

from suture.editor.errors import EditFailedError


def solve_covariance(mom2: torch.Tensor, rhs: torch.Tensor, ridge: float) -> torch.Tensor:
    """C⁻¹ rhs in float64, with a ridge relative to C's mean diagonal."""
    cov = mom2.double()
    if ridge:
        cov = cov + ridge * cov.diagonal().mean() * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    try:
        return torch.linalg.solve(cov, rhs.double())
    except RuntimeError as exc:  # singular: statistics from too little text
        raise EditFailedError(f"key covariance is singular ({exc}); use more statistics text or a ridge") from None


def read_directions(keys: torch.Tensor, mom2: torch.Tensor, ridge: float) -> torch.Tensor:
    """ũ = C⁻¹k / (kᵀC⁻¹k) per row of `keys` [n, d_in]: the update reads ũ·x, which is 1 at the key."""
    u = solve_covariance(mom2, keys.T, ridge).T  # [n, d_in]
    denom = (u * keys.double()).sum(1, keepdim=True)
    if not bool(torch.isfinite(denom).all()) or bool((denom.abs() < 1e-12).any()):
        raise EditFailedError("the key is (numerically) orthogonal to C⁻¹k: the rank-one update is undefined")
    return (u / denom).to(keys.dtype)


def rank_one_factors(direction: torch.Tensor, residual: torch.Tensor):
    """(left [d_out, 1], right [1, d_in]) with left @ right = residual ũᵀ in (out, in) orientation."""
    return residual[:, None], direction.to(residual.dtype)[None, :]
