"""The runtime of an exported model: ONNX Runtime runs the graph `plmkit export` wrote (plmkit.export.onnx)
in place of the PyTorch model; the runner (plmkit.train.run.load) opens an exported directory with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

ONNX_FILE = "model.onnx"
DECODER_FILE = "decoder.safetensors"


class OnnxModel(torch.nn.Module):
    """What the runner and the task's `outputs` see in place of the PyTorch model: `forward(batch)`
    runs the graph; a tagger's `decode` uses the CRF read from decoder.safetensors."""

    def __init__(self, path: str | Path, meta: dict[str, Any], graph: str = ONNX_FILE):
        super().__init__()
        import onnxruntime as ort

        path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = ort.InferenceSession(str(path / graph), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.crf = None
        if (path / DECODER_FILE).is_file():
            from safetensors.torch import load_file

            from plmkit.models.crf import CRF, allowed_transitions

            self.crf = CRF(len(meta["labels"]), *allowed_transitions(meta["labels"], meta["scheme"]))
            self.crf.load_state_dict(load_file(str(path / DECODER_FILE)))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        feed = {name: batch[name].cpu().numpy() for name in self.inputs}
        return torch.from_numpy(self.session.run(None, feed)[0])

    def decode(self, emissions: torch.Tensor, unit_mask: torch.Tensor) -> torch.Tensor:
        from plmkit.models.tagger import Tagger

        return Tagger.decode(self, emissions, unit_mask)  # argmax, or Viterbi with self.crf


def onnx_forward(model: OnnxModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(batch)


def is_exported(path: str | Path) -> bool:
    return Path(path, ONNX_FILE).is_file()
