"""Run one row of a value-objective batch with an optimized δ written into the model, as the edit would:
through the rank-one update (W x + (ũ·x) δ at every token) or at the subject's last token only."""

import torch


def through_update_direction(keys: torch.Tensor) -> torch.Tensor:
    """A read direction with ũ·k = 1 (the tests' stand-in for ROME's C⁻¹k*/(k*ᵀC⁻¹k*))."""
    return keys / keys.pow(2).sum(1, keepdim=True)


@torch.no_grad()
def row_logits(model, mlp_out, batch, row: int, solution=None, direction=None) -> torch.Tensor:
    """Logits [length, vocab] of `batch` row `row`, with `solution`'s δ written (none: the unedited model)."""
    def write(_module, args, out):
        if direction is not None:
            return out + (args[0].float() @ direction(solution.keys).T * solution.deltas).to(out.dtype)
        out = out.clone()
        out[0, int(batch.subject_last[row])] += solution.deltas[0].to(out.dtype)
        return out

    hook = mlp_out.register_forward_hook(write) if solution is not None else None
    try:
        return model(input_ids=batch.input_ids[row:row + 1], attention_mask=batch.attention_mask[row:row + 1]
                     ).logits[0].float()
    finally:
        if hook:
            hook.remove()
