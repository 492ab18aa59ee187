"""The item index behind one small protocol (``ItemIndex``): HNSW for serving and a brute-force twin.

Imports nothing from ``stream`` but ``stream.errors``, and nothing from ``encoders``.
"""
