"""Steps: one area each (image, host, job, store, backup, local, dns, migrate), facts -> plan -> apply, and
the runner they use. They import adapters and core, and other steps without a cycle.
"""
