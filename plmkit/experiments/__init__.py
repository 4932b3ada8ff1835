"""Experiments: runs that call the public API (plmkit.api) several times and report on the lot.

`compare` (feature extraction against partial and full fine-tuning) and `probe` (one probe per layer).
This layer sits above the API: it may import plmkit.api, and plmkit.api never imports it.
"""
