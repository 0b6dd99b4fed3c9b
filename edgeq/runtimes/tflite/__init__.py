"""LiteRT (TFLite): FP32/FP16/dynamic-range, full-integer INT8, W8A16 and INT4 weight-only backends."""
