"""bertdot.cli.demo"""
