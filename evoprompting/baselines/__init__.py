"""Search methods without a language model, as `search.Proposer`s.

  regularized_evolution.py  aging evolution (Real et al., 2019) with the AST
                            mutations of `evoprompting.mutation`
  random_search.py          random mutants of the seeds, no selection
  variation.py              what both share: the child form, repeated
                            mutation, redrawing failed or repeated children

Each is chosen by its gin file (gin/search/<name>.gin) after a budget file,
with the same store, sandbox, sample budget and report as EvoPrompting.
"""
