"""Everything about images and vectors: decoding, embedding, storing, indexing, searching.

Knows nothing of chat; `assistant` depends on it, never the other way round.
"""
