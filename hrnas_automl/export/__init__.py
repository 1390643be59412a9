"""Taking a found network out: ONNX / torch.export files, an inference form, and a loader that needs no NNI."""
