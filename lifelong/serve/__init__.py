"""`lifelong serve`: a deployed model that answers predictions while it keeps learning (docs/serve.md).

The HTTP layer (``app``) needs the optional extra ``lifelong[serve]``; ``command`` imports it only when run.
"""
