"""bertdot.server"""
