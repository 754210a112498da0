"""bertdot.client.bench"""
