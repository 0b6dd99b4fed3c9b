"""ONNX Runtime: FP32/FP16 baselines, QDQ INT8 (static, ORT quantizer), W8A16 and INT4 weight-only backends."""
