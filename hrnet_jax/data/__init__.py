"""Data: dataset readers (sources), numpy transforms (transforms, keypoints), the writers of the
synthetic demo datasets (demos), grain pipelines (pipeline)."""
