"""Which tokens an edited model's drift moves probability to: the session saved by `sequential.py --state`
is restored, and over the drift reference text's positions the probability each vocabulary token gains
(q - p where the edited q exceeds the unedited p) is summed. Reported: the tokens that gained most, and
the share of all moved probability (total variation, summed over positions) that went to the first token
of a new target of the first --edits records. A large share says the long-run drift is the edits' targets
becoming likelier everywhere (a prior shift), not noise spread by each write. The mean entropy of the
next-token distributions, unedited and edited, says whether the edits flatten them.

    python benchmarks/drift_tokens.py --state /work/runs/seq.state \\
        --data ../shared/data/counterfact_rome_format_1000.json --edits 250
"""

from __future__ import annotations

import argparse
import json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state", required=True, help="a session file saved by sequential.py --state")
    parser.add_argument("--data", required=True, help="the records the session edited, in order (CounterFact JSON)")
    parser.add_argument("--edits", type=int, required=True, help="how many of them the session applied")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    import torch

    from suture.editor import Editor
    from suture.editor.kv.tokens import request_target_ids
    from suture.evaluation import load_counterfact
    from suture.evaluation.drift import default_reference_texts

    torch.set_num_threads(args.threads)
    editor = Editor.load(args.model)
    editor.restore_session(args.state)
    tok = editor.tokenizer
    cases = load_counterfact(args.data, limit=args.edits)
    first_ids = {request_target_ids(tok, case)[0] for case in cases}
    gain = torch.zeros(len(tok), dtype=torch.float64)
    moved, entropy_base, entropy_edited, positions = 0.0, 0.0, 0.0, 0
    with torch.no_grad():
        for text in default_reference_texts():
            batch = tok([text], return_tensors="pt").to(editor.handle.device)
            with editor.weights.base_weights():
                p = editor.model(**batch).logits[0].float().softmax(-1).double().cpu()
            q = editor.model(**batch).logits[0].float().softmax(-1).double().cpu()
            diff = q - p
            entropy_base -= float((p * p.clamp(min=1e-30).log()).sum())
            entropy_edited -= float((q * q.clamp(min=1e-30).log()).sum())
            positions += p.shape[0]
            moved += 0.5 * float(diff.abs().sum())
            gain[: diff.shape[1]] += diff.clamp(min=0).sum(0)
    to_targets = float(gain[list(first_ids)].sum())
    order = gain.argsort(descending=True)[: args.top].tolist()
    print(json.dumps({"edits": args.edits, "moved_probability": round(moved, 3),
                      "gained_by_target_first_tokens": round(to_targets, 4),
                      "share_to_target_first_tokens": round(to_targets / moved, 4),
                      "target_first_tokens": len(first_ids),
                      "mean_entropy_base": round(entropy_base / positions, 4),
                      "mean_entropy_edited": round(entropy_edited / positions, 4)}))
    for i in order:
        print(json.dumps({"token": tok.decode([i]), "gain": round(float(gain[i]), 3), "is_target": i in first_ids}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
