"""The MLflow image: build and push with the docker SDK (the engine and the registry are adapters/)."""
