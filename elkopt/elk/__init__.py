"""The published Elk compiler, rebuilt as a baseline inside elkopt.

Written from the description in ELK_REFERENCE.md (the artifact has no licence: none of its
code is here): its per-operator cold-hot tables (`tables`), and its schedulers Basic,
Static, Elk-Dyn, Elk-Full and Ideal (`schedulers`), with the published preload-order
candidates (`orders`). `coldhot` holds the data they share. `program` gives a graph's
operators their tables (the published ones, or elkopt's as cold-hot tables), `compile`
runs the designs as elkopt schedulers (``scheduler=elk_*``), `timing` times and checks a
design's schedule under the published model, and `convert` writes its decisions as an
elkopt schedule to time on elkopt's timeline.
"""
