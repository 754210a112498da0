"""bertdot.server.index"""
