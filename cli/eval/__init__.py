"""bertdot.cli.eval"""
