"""Person and garment analysis: pose (pose.py), placement boxes (placement.py), masks
(masks.py), pre-flight verdicts (analysis.py) and previews (overlay.py).

Importing this package loads no model: MediaPipe is imported when an estimator or segmenter
first runs.
"""
