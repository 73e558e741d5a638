"""The code language model served in-process (issue: lm/). Not yet implemented."""
