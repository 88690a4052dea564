"""Everything about images and vectors: decoding, embedding, storing, indexing, searching.

Knows nothing of chat; `assistant` depends on it, never the other way round.
"""

import os

# torch and faiss share OpenMP; spinning idle threads made CPU inference 10-15x slower on a busy
# machine (measured: EfficientNet-Lite0 1.4 s vs 0.1 s an image). Must be set before either loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
