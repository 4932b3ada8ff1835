"""`plmkit export`: ONNX graphs, int8 quantisation, parity checks."""
