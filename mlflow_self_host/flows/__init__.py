"""Flows: the tasks that span areas (deploy, release, rollback, takeover, doctor, config), made of steps.
"""
