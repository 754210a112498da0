"""Generated wire code for the bertdot.v1 gRPC API.

Regenerate with `python -m bertdot.v1.codegen` after editing bertdot.proto.
"""
