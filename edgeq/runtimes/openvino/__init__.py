"""OpenVINO: IR FP32/FP16/BF16 and INT8 (NNCF post-training quantization) and INT4 weight-compression backends."""
