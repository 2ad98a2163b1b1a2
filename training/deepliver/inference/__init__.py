"""Inference: a bundle runs through a ``Predictor`` (torch or onnxruntime); the rest is numpy/SimpleITK.

``load_model(bundle)`` -> ``LoadedModel``; ``predict_volume(image, model)`` -> uint8 mask on the image's grid.
"""
