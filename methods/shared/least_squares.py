"""The batch key-value update shared by MEMIT-style methods, with optional null-space preservation.

MEMIT: for keys K [d_in, n] and residuals R [d_out, n] the update minimizing ‖ΔK - R‖² plus the change on
preserved keys (covariance C, weight λ) is Δ = R Kᵀ (λC + KKᵀ)⁻¹.

AlphaEdit: project onto the null space of the preserved keys' covariance, P = U₀U₀ᵀ over C's smallest
eigenvectors, so that Δ k = 0 for preserved keys k; keys of earlier edits K_p are carried (as K_pK_pᵀ) so later
edits do not overwrite them: Δ = R Kᵀ P (P(KKᵀ + K_pK_pᵀ) + αI)⁻ᵀ.

Both are returned as low-rank factors (rank ≤ n).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from suture.editor.errors import EditFailedError


class NullSpace(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    threshold: float = Field(1e-2, gt=0, lt=1, description="eigenvalues below threshold · max span the null space")
    energy: float | None = Field(
        None, gt=0, lt=1, description="instead of threshold: the smallest eigen-directions holding at most this "
        "fraction of the keys' energy (trace of C) span the null space, so E‖Pk‖² ≤ energy · E‖k‖²")
    l2: float = Field(10.0, gt=0, description="ridge α of the projected solve")


def null_space_projector(mom2: torch.Tensor, threshold: float, energy: float | None = None) -> torch.Tensor:
    """P = U₀U₀ᵀ over the eigenvectors of C whose eigenvalue is below threshold · the largest, or (with
    `energy`) over the smallest ones whose eigenvalues sum to at most energy · trace(C)."""
    values, vectors = torch.linalg.eigh(mom2.double())  # ascending
    if energy is not None:
        kept = vectors[:, torch.cumsum(values.clamp_min(0), 0) <= energy * values.clamp_min(0).sum()]
    else:
        kept = vectors[:, values < threshold * values.max()]
    if kept.shape[1] == 0:
        raise EditFailedError("the key covariance has no null space at this threshold; raise null_space.threshold")
    return kept @ kept.T


def _solve(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    try:
        return torch.linalg.solve(matrix, rhs)
    except RuntimeError as exc:
        raise EditFailedError(f"the update's linear system is singular ({exc})") from None


def memit_factors(keys: torch.Tensor, residuals: torch.Tensor, mom2: torch.Tensor, weight: float,
                  preserved_gram: torch.Tensor | None = None):
    """(left [d_out, n], right [n, d_in]) of Δ = R Kᵀ (λC + G + KKᵀ)⁻¹; keys [n, d_in], residuals [n, d_out];
    `preserved_gram` G [d_in, d_in] (float64, default none) is further keys to keep, e.g. w·K_pK_pᵀ over
    earlier edits' keys (recursive least squares: the joint solve of all edits, one edit at a time)."""
    k = keys.double().T
    system = weight * mom2.double() + k @ k.T
    if preserved_gram is not None:
        system = system + preserved_gram.to(system.device, torch.float64)
    right = _solve(system, k).T  # (λC + KKᵀ) symmetric: Kᵀ(…)⁻¹ = ((…)⁻¹K)ᵀ
    return residuals.T.float(), right.float()


def null_space_factors(keys: torch.Tensor, residuals: torch.Tensor, projector: torch.Tensor,
                       earlier_gram: torch.Tensor | None, space: NullSpace):
    """(left, right) of AlphaEdit's update; `earlier_gram` [d_in, d_in] is K_pK_pᵀ over the keys earlier edits
    wrote (methods/shared/preserved_keys.py keeps it as a running sum)."""
    k = keys.double().T
    gram = k @ k.T
    if earlier_gram is not None:
        gram = gram + earlier_gram.to(gram.device)
    p = projector.to(gram.device)
    system = p @ gram + space.l2 * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    right = _solve(system, p @ k).T  # [n, d_in]: Δ = R (M⁻¹ P K)ᵀ
    return residuals.T.float(), right.float()


def null_space_directions(keys: torch.Tensor, projector: torch.Tensor, earlier_gram: torch.Tensor | None,
                          space: NullSpace) -> torch.Tensor:
    """Rank-one read directions ũ [n, d_in] for one-key-at-a-time methods: ũ ∝ (P(kkᵀ + K_pK_pᵀ) + αI)⁻¹Pk,
    scaled so ũ·k = 1 (the edited key then maps exactly to its target); `earlier_gram` is K_pK_pᵀ or None."""
    out = []
    for key in keys.double():
        gram = key[:, None] @ key[None, :]
        if earlier_gram is not None:
            gram = gram + earlier_gram.to(gram.device)
        p = projector.to(gram.device)
        system = p @ gram + space.l2 * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        u = _solve(system, p @ key)
        denom = torch.dot(u, key)
        if denom.abs() < 1e-12:
            raise EditFailedError("the key has no component in the null space: null-space editing cannot write it")
        out.append(u / denom)
    return torch.stack(out).to(keys.dtype)
