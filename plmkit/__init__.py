"""plmkit: pretrained language models for real NLP work, Chinese first."""

__version__ = "0.1.0"
