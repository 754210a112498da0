"""bertdot.export"""
