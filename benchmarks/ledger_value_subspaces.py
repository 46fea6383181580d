"""Do the values a sequential run wrote share more than one direction? Reads the unit values kept in a saved
session's ledger (`sequential.py --state`, MEMIT's `orthogonal_to_shared_value` keeps artifact
"unit_values"); no model is loaded.

    python benchmarks/ledger_value_subspaces.py /work/runs/seq_orth.state

Split-half test: the top-k eigenvectors of one half's second moment Σ uuᵀ/n, and the mean share of the other
half's unit energy inside them (k/d for independent directions), for k = 1, 2, 4, 8, 16, both ways round
(halves interleaved, so both span the whole run); and the top eigenvalues of the whole second moment times d
(1 for isotropic directions). Companion of value_coherence.py, which optimizes values on the unedited model.
"""

from __future__ import annotations

import argparse
import json


def ledger_subspaces(path: str, ranks: tuple[int, ...] = (1, 2, 4, 8, 16)) -> dict:
    """Split-half test of shared value directions among the unit values a session's ledger kept."""
    import torch

    # A session file holds plain containers and tensors only (editor/session.py): safe to load here.
    entries = torch.load(path, weights_only=True)["entries"]
    unit = torch.cat([v for e in entries for v in _as_list(e["artifacts"].get("unit_values"))]).double()
    n, d = unit.shape
    first, second = unit[0::2], unit[1::2]  # interleaved: both halves span the whole run

    def top(values: torch.Tensor, k: int) -> torch.Tensor:
        _, vectors = torch.linalg.eigh(values.T @ values / len(values))
        return vectors[:, -k:]

    inside = {str(k): {"first_in_second": float(((first @ top(second, k)) ** 2).sum(1).mean()),
                       "second_in_first": float(((second @ top(first, k)) ** 2).sum(1).mean()),
                       "independent": k / d} for k in ranks}
    spectrum = torch.linalg.eigvalsh(unit.T @ unit / n).flip(0)[:8] * d
    return {"session": str(path), "values": n, "d": d, "energy_in_other_halfs_top_k": inside,
            "top_eigenvalues_times_d": [round(float(v), 2) for v in spectrum],
            "mean_unit_length": float(unit.mean(0).norm()), "independent_expectation": n ** -0.5}


def _as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("session", help="a session file saved by sequential.py --state")
    parser.add_argument("--ranks", default="1,2,4,8,16", help="comma-separated subspace sizes k")
    args = parser.parse_args(argv)
    print(json.dumps(ledger_subspaces(args.session, tuple(int(k) for k in args.ranks.split(",")))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
