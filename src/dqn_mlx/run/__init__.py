"""What a training run leaves behind: its folder, epoch ends, checkpoints, the resumable state,
metrics and the loggers they go through. ``train.train`` runs ``core.loop`` inside all this."""
