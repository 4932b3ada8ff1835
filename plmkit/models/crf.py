"""A linear-chain CRF for sequence tagging: pytorch-crf's likelihood plus constrained, batched Viterbi."""

from __future__ import annotations

import torch
from torchcrf import CRF as _TorchCRF

from plmkit.data.tagging import SCHEMES, check_tag, may_follow



def allowed_transitions(labels: list[str], scheme: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bool masks (start (L,), trans (L, L) with trans[i, j] = may j follow i, end (L,)) for a tagging scheme
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
    start = torch.tensor([may_follow(None, t, scheme) for t in labels])  # (L,)
    trans = torch.tensor([[may_follow(a, b, scheme) for b in labels] for a in labels])  # (L, L)
    end = torch.tensor([may_follow(t, None, scheme) for t in labels])  # (L,)
    return start, trans, end


class CRF(torch.nn.Module):
    """Linear-chain CRF: free transitions in training (pytorch-crf), scheme constraints in decoding."""

    def __init__(self, num_tags: int, start: torch.Tensor | None = None, trans: torch.Tensor | None = None,
                 end: torch.Tensor | None = None):
        super().__init__()
        self.num_tags = num_tags
        self.crf = _TorchCRF(num_tags, batch_first=True)
        start = torch.ones(num_tags, dtype=torch.bool) if start is None else start.bool()  # (L,)
        trans = torch.ones(num_tags, num_tags, dtype=torch.bool) if trans is None else trans.bool()  # (L, L)
        end = torch.ones(num_tags, dtype=torch.bool) if end is None else end.bool()  # (L,)
        if start.shape != (num_tags,) or end.shape != (num_tags,) or trans.shape != (num_tags, num_tags):
            raise ValueError(f"allowed masks must have shapes ({num_tags},), ({num_tags}, {num_tags}), ({num_tags},)")
        self.register_buffer("start_allowed", start.clone(), persistent=False)
        self.register_buffer("trans_allowed", trans.clone(), persistent=False)
        self.register_buffer("end_allowed", end.clone(), persistent=False)

    @classmethod
    def from_labels(cls, labels: list[str], scheme: str = "none") -> "CRF":
        """A CRF over `labels` whose decoding obeys `scheme` (bio, bioes, bmes or none)."""
        return cls(len(labels), *allowed_transitions(labels, scheme))

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood, mean over the sentences of the batch (no constraints)."""
        mask = mask.bool()  # (B, T)
        tags = tags.long().masked_fill(~mask, 0)  # (B, T) padding labels (e.g. -100) never index
        llh = self.crf(emissions.float(), tags, mask=mask, reduction="sum")  # ()
        return -llh / emissions.shape[0]

    def forward(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.nll(emissions, tags, mask)

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Constrained Viterbi over the batch: best tags (B, T), -1 beyond each sequence's length.

        Forbidden moves score -inf, so the path is valid whenever a valid one exists (else arbitrary).
        """
        emissions = emissions.float()  # (B, T, L)
        mask = mask.bool()  # (B, T)
        batch, steps, num_tags = emissions.shape
        ninf = float("-inf")  # forbidden moves can never win while an allowed path exists
        start = self.crf.start_transitions.float().masked_fill(~self.start_allowed, ninf)  # (L,)
        trans = self.crf.transitions.float().masked_fill(~self.trans_allowed, ninf)  # (L, L)
        end = self.crf.end_transitions.float().masked_fill(~self.end_allowed, ninf)  # (L,)
        identity = torch.arange(num_tags, device=emissions.device).expand(batch, num_tags)  # (B, L)

        score = start + emissions[:, 0]  # (B, L)
        pointers = []
        for t in range(1, steps):
            cand = score.unsqueeze(2) + trans + emissions[:, t].unsqueeze(1)  # (B, L, L) prev x next
            best, back = cand.max(dim=1)  # (B, L), (B, L)
            step_on = mask[:, t].unsqueeze(1)  # (B, 1)
            score = torch.where(step_on, best, score)  # (B, L) padding keeps the score
            pointers.append(torch.where(step_on, back, identity))  # (B, L) padding points to itself
        score = score + end  # (B, L) padding left the score at each real last position

        last = score.argmax(dim=1)  # (B,)
        path = [last]
        for back in reversed(pointers):
            last = back.gather(1, last.unsqueeze(1)).squeeze(1)  # (B,)
            path.append(last)
        tags = torch.stack(path[::-1], dim=1)  # (B, T)
        return tags.masked_fill(~mask, -1)
