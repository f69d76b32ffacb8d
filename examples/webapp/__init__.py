"""Upload-a-photo web app that classifies images through the model server's gRPC API."""
