"""CLRS-30 algorithms as a search task (issue 6).

  _clrs_import.py  dm-clrs' data side (samplers, specs, evaluation) without TF
  data.py          Generalist-protocol datasets, cached, as padded GraphsTuples
  processors.py    (gated) MPNN / PGN with the evolvable triplet-message slot
  model.py         encode-process-decode with hint prediction
  metrics.py       scores as clrs.evaluate computes them
  train.py         the single-task training recipe of Ibarz et al. (2022)
"""
