"""The MLflow image: build and push with the docker SDK."""
