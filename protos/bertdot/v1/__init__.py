"""Generated wire code for the bertdot.v1 gRPC API (regenerate with `python -m bertdot.v1.codegen`)."""
