"""CLRS-30 algorithms as a search task (issue: clrs_tasks/). Not yet implemented."""
