"""bertdot.server.engine"""
