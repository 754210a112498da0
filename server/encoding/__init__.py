"""bertdot.server.encoding"""
