"""Support modules of `benchmarks/peers.py`: bertdot beside other embedding servers.

Two kinds of module live here. Those the command imports run in the project's environment:
`venvs` (one virtual environment per peer, under the cache folder), `model` (the folder every
peer reads), `contenders` (starting, loading and stopping each contender) and `report`. The
others are scripts run *by path* with a peer's own interpreter, so they import nothing from
bertdot or from `benchmarks/` and only their siblings by plain name: `worker_fastembed`
(fastembed, in process), `server_pytriton`, `server_infinity`, `load` (the closed-loop load
client shared by every serving contender), `machine` (CPU accounting from /proc, stdlib only)
and `reference` (sentence-transformers' vectors, run with the project's interpreter).
"""
