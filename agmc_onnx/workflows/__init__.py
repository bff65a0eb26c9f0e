"""Whole runs, end to end: what `prune`, a search and `finetune` do, each in one place.

`context` decides once what a run needs (model, preprocessing, data splits, device); `audit` writes
the engine's account of a plan; `search` plans with data; `prune` and `finetune` are the commands' jobs;
`validate` checks a command's flags, paths and inputs before any of that (`options` holds prune's flags).
"""
