"""bertdot.server.rpc"""
