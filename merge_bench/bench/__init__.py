"""The bench wing: the run pipeline (``run``), the content-hash result cache, provenance and scores.

Imports ``evaluation``, ``backbones``, ``merging`` and ``io``; the leaderboard and the commands sit above it.
"""
