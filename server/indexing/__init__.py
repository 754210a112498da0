"""bertdot.server.indexing"""
