"""bertdot.cli"""
