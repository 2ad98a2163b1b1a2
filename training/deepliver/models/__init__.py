"""Networks and model bundles.

``deepliver.models.bundle`` (model.json + weights.safetensors) imports no torch at module level, so
bundle discovery works where torch is absent; building a network needs torch.
"""
