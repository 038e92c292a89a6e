"""Data: dataset readers (sources), numpy transforms, demo data writers, grain pipelines."""
