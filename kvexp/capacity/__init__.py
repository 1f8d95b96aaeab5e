"""How many models fit on one GPU at an SLO, per allocator.

The `mix` (N models made from one config) and `capacity` schemas live in
kvexp/config/capacity.py, a mix's instances in kvexp/config/instances.py (a point reads them).

- room.py: whether N instances fit in device memory at all, before any server starts.
- search.py: the search over N (bisection on a monotone attainment), and the grid it replaces.
- attainment.py: a point's SLO attainment with its interval, read from its folder.
- sweeper.py: the Hydra sweeper that plans on the sim and confirms on the real engine.
- answer.py: capacity.json, the answer and its evidence.
"""
