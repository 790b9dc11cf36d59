"""TF Serving-compatible model server (`tfs-model-server`); see main.py for the overview."""
