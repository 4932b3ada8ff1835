"""A linear-chain CRF for sequence tagging: pytorch-crf's likelihood plus constrained, batched Viterbi.

Shapes (legend in plmkit/models/__init__.py): B batch, U units (the tagged sequence), K tags.
"""

from __future__ import annotations

import torch
from torchcrf import CRF as _TorchCRF

from plmkit.data.tagging import SCHEMES, check_tag, may_follow


def allowed_transitions(labels: list[str], scheme: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bool masks (start (K,), trans (K, K) with trans[i, j] = may j follow i, end (K,)) for a tagging scheme
    (bio, bioes, bmes; none allows everything); the rules are plmkit.data.tagging.may_follow."""
    n = len(labels)
    if scheme == "none":
        return torch.ones(n, dtype=torch.bool), torch.ones(n, n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown tagging scheme {scheme!r}; choose from {', '.join(SCHEMES)}, none")
    for label in labels:
        reason = check_tag(label, scheme)
        if reason:
            raise ValueError(reason)
    start = torch.tensor([may_follow(None, t, scheme) for t in labels])  # (K,)
    trans = torch.tensor([[may_follow(a, b, scheme) for b in labels] for a in labels])  # (K, K)
    end = torch.tensor([may_follow(t, None, scheme) for t in labels])  # (K,)
    return start, trans, end


class CRF(torch.nn.Module):
    """Linear-chain CRF: free transitions in training (pytorch-crf), scheme constraints in decoding."""

    def __init__(
        self,
        num_tags: int,
        start: torch.Tensor | None = None,
        trans: torch.Tensor | None = None,
        end: torch.Tensor | None = None,
    ):
        super().__init__()
        self.num_tags = num_tags
        self.crf = _TorchCRF(num_tags, batch_first=True)
        start = torch.ones(num_tags, dtype=torch.bool) if start is None else start.bool()  # (K,)
        trans = torch.ones(num_tags, num_tags, dtype=torch.bool) if trans is None else trans.bool()  # (K, K)
        end = torch.ones(num_tags, dtype=torch.bool) if end is None else end.bool()  # (K,)
        if start.shape != (num_tags,) or end.shape != (num_tags,) or trans.shape != (num_tags, num_tags):
            raise ValueError(f"allowed masks must have shapes ({num_tags},), ({num_tags}, {num_tags}), ({num_tags},)")
        self.register_buffer("start_allowed", start.clone(), persistent=False)
        self.register_buffer("trans_allowed", trans.clone(), persistent=False)
        self.register_buffer("end_allowed", end.clone(), persistent=False)

    @classmethod
    def from_labels(cls, labels: list[str], scheme: str = "none") -> CRF:
        """A CRF over `labels` whose decoding obeys `scheme` (bio, bioes, bmes or none)."""
        return cls(len(labels), *allowed_transitions(labels, scheme))

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood, mean over the sentences of the batch (no constraints)."""
        mask = mask.bool()  # (B, U)
        tags = tags.long().masked_fill(~mask, 0)  # (B, U) padding labels (e.g. -100) never index
        llh = self.crf(emissions.float(), tags, mask=mask, reduction="sum")  # ()
        return -llh / emissions.shape[0]

    def forward(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # the loss stays in forward: a CRF's forward is its log-likelihood (pytorch-crf's convention), negated here
        return self.nll(emissions, tags, mask)

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Constrained Viterbi over the batch: best tags (B, U), -1 beyond each sequence's length.

        Forbidden moves score -inf, so the path is valid whenever a valid one exists (else arbitrary).
        """
        emissions = emissions.float()  # (B, U, K)
        mask = mask.bool()  # (B, U)
        batch, steps, num_tags = emissions.shape
        ninf = float("-inf")  # forbidden moves can never win while an allowed path exists
        start = self.crf.start_transitions.float().masked_fill(~self.start_allowed, ninf)  # (K,)
        trans = self.crf.transitions.float().masked_fill(~self.trans_allowed, ninf)  # (K, K)
        end = self.crf.end_transitions.float().masked_fill(~self.end_allowed, ninf)  # (K,)
        identity = torch.arange(num_tags, device=emissions.device).expand(batch, num_tags)  # (B, K)

        score = start + emissions[:, 0]  # (B, K)
        pointers = []
        for t in range(1, steps):
            cand = score.unsqueeze(2) + trans + emissions[:, t].unsqueeze(1)  # (B, K, K) prev x next
            best, back = cand.max(dim=1)  # (B, K), (B, K)
            step_on = mask[:, t].unsqueeze(1)  # (B, 1)
            score = torch.where(step_on, best, score)  # (B, K) padding keeps the score
            pointers.append(torch.where(step_on, back, identity))  # (B, K) padding points to itself
        score = score + end  # (B, K) padding left the score at each real last position

        last = score.argmax(dim=1)  # (B,)
        path = [last]
        for back in reversed(pointers):
            last = back.gather(1, last.unsqueeze(1)).squeeze(1)  # (B,)
            path.append(last)
        tags = torch.stack(path[::-1], dim=1)  # (B, U)
        return tags.masked_fill(~mask, -1)
