"""The sweep process: Hydra's entry, the validated sweep, one point's sweep side (job),
the servers shared between points, GPU slots, resume and the end-of-sweep report."""
