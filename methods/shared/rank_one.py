"""The closed-form rank-one key-value update of ROME.

Given a key k*, the change r the layer should add to its output for that key, and the key covariance
C = E[k kᵀ], the update minimizing the change on other keys (weighted by C) subject to W' k* = W k* + r is

    W' = W + r uᵀ / (uᵀ k*),   u = C⁻¹ k*.
"""

from __future__ import annotations

import torch

from editor.errors import EditFailedError


def solve_covariance(mom2: torch.Tensor, rhs: torch.Tensor, ridge: float) -> torch.Tensor:
    """C⁻¹ rhs in float64, with a ridge relative to C's mean diagonal."""
    cov = mom2.double()
    if ridge:
        cov = cov + ridge * cov.diagonal().mean() * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    try:
        return torch.linalg.solve(cov, rhs.double())
    except RuntimeError as exc:  # singular: statistics from too little text
        raise EditFailedError(f"key covariance is singular ({exc}); use more statistics text or a ridge") from None


def rank_one_factors(key: torch.Tensor, residual: torch.Tensor, mom2: torch.Tensor, ridge: float):
    """(left [d_out, 1], right [1, d_in]) with left @ right the update in (out, in) orientation."""
    u = solve_covariance(mom2, key, ridge)
    denom = torch.dot(u, key.double())
    if not torch.isfinite(denom) or denom.abs() < 1e-12:
        raise EditFailedError("the key is (numerically) orthogonal to C⁻¹k: the rank-one update is undefined")
    right = (u / denom).to(residual.dtype)
    return residual[:, None], right[None, :]
