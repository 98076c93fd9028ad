"""Taking over a setup the original recipe left (Makefile, playbook, `nomad job run` by hand).

``schema.py``: MLflow's schema revisions as the image's MLflow knows them. ``host_store.py``: what the host's
store is (one read-only script over SSH) and the commands that change it. ``flows/takeover.py``: the plan from
those facts and its apply, on its own (`inv migrate`) or as the first step of `inv deploy`.
"""
