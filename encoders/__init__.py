"""What a worker loads: the saved artifact, the user encoder that serves it, and the MiniLM text encoder.

``encoders.models`` holds one model per file; ``encoders.training`` trains and evaluates them. Serving code
(this package's modules and ``encoders.models``) imports nothing from training; nothing here imports ``stream``
except ``stream.errors``.
"""
