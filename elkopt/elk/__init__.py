"""The published Elk compiler, rebuilt as a baseline inside elkopt.

Written from the description in ELK_REFERENCE.md (the artifact has no licence: none of its
code is here): its per-operator cold-hot tables (`tables`), and its schedulers Basic,
Static, Elk-Dyn, Elk-Full and Ideal (`schedulers`), with the published preload-order
candidates (`orders`). `coldhot` holds the data they share.
"""
