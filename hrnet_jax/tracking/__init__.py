"""Pose tracking in video: the PoseTrack metrics (`posetrack_metrics`; the command line is
`python -m hrnet_jax.posetrack_eval`)."""
