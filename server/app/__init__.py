"""bertdot.server.app"""
