"""The pieces `nasfpn_tf/trainer.py` is made of, one concept per file.

  checks.py       config and data checks that fail before anything is written
  intervals.py    the optimizer step, and a callback base that fires every N steps
  guard.py        NonFiniteLossGuard: stops at the first NaN/inf loss, vetoes every save after it
  checkpoints.py  AtomicCheckpoint (checkpoint.weights.h5) and StepBackup (backup/, exact resume)
  summaries.py    StepSummaries: TensorBoard scalars against the optimizer step
  coco_eval.py    CocoEvalCallback: COCO AP at each epoch end, into the logs and eval_results.json

trainer.py puts them in order (guard first, summaries last); the multi-worker fix of
`model.fit` is `nasfpn_tf/distribute.py`'s `install_distributed_fit`.
"""
